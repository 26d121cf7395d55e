"""Which entries of a pg_dump archive a partial restore (`--table`, `--schema`) restores.

pg_restore's own ``--table`` restores the named table alone: no partitions, no sequences its
columns own, no schema to put it in. So a partial restore lists the archive's table of
contents (``pg_restore -l --verbose``, which also prints each entry's dependencies), chooses
entries here, and hands pg_restore that list (``-L``). Pure: the listing in, dump ids out.

- the chosen tables, and the partitions attached to them (``TABLE ATTACH`` entries depend on
  parent and partition), down every level;
- with ``--schema``, every entry in that schema;
- what they need that the target lacks (their schema, types, domains, extensions, functions:
  ``defined`` names what the target has);
- what belongs to the chosen objects: data, owned sequences and their values, defaults,
  constraints, indexes, triggers, policies, row security, grants, comments; only when every
  entry it depends on is restored or already there (a foreign key to a table that is not
  restored is left out rather than failing the restore).

pg_restore prints schema and name without quotes (``TABLE Billing Data Invoice Lines
fidelity_owner``), so an entry is matched against the names the caller knows, never split on
spaces.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Set
from dataclasses import dataclass, field

# Longest first: "TABLE DATA" before "TABLE".
DESCRIPTIONS = sorted(
    [
        "ACL",
        "BLOB METADATA",
        "BLOBS",
        "CAST",
        "COLLATION",
        "COMMENT",
        "CONSTRAINT",
        "CONVERSION",
        "DATABASE",
        "DATABASE PROPERTIES",
        "DEFAULT",
        "DEFAULT ACL",
        "DOMAIN",
        "ENCODING",
        "EVENT TRIGGER",
        "EXTENSION",
        "FK CONSTRAINT",
        "FOREIGN TABLE",
        "FUNCTION",
        "INDEX",
        "INDEX ATTACH",
        "MATERIALIZED VIEW",
        "MATERIALIZED VIEW DATA",
        "OPERATOR",
        "POLICY",
        "PROCEDURE",
        "PUBLICATION",
        "PUBLICATION TABLE",
        "ROW SECURITY",
        "RULE",
        "SCHEMA",
        "SEARCHPATH",
        "SECURITY LABEL",
        "SEQUENCE",
        "SEQUENCE OWNED BY",
        "SEQUENCE SET",
        "SHELL TYPE",
        "STATISTICS",
        "STATISTICS DATA",
        "STDSTRINGS",
        "TABLE",
        "TABLE ATTACH",
        "TABLE DATA",
        "TRIGGER",
        "TYPE",
        "VIEW",
        "AGGREGATE",
        "LARGE OBJECT",
    ],
    key=len,
    reverse=True,
)
# What a chosen table needs to exist first, created when the target lacks it.
PREREQUISITES = {"SCHEMA", "EXTENSION", "TYPE", "DOMAIN", "SHELL TYPE", "FUNCTION", "COLLATION"}
# What belongs to restored objects.
BELONGINGS = {
    "TABLE DATA", "SEQUENCE", "SEQUENCE SET", "SEQUENCE OWNED BY", "DEFAULT", "CONSTRAINT",
    "FK CONSTRAINT", "INDEX", "INDEX ATTACH", "TABLE ATTACH", "TRIGGER", "POLICY", "ROW SECURITY",
    "ACL", "COMMENT", "SECURITY LABEL", "DEFAULT ACL", "RULE", "STATISTICS", "STATISTICS DATA",
    "MATERIALIZED VIEW DATA",
}  # fmt: skip
# Never part of a partial restore: the database itself, session settings, large objects.
_NEVER = {"DATABASE", "DATABASE PROPERTIES", "ENCODING", "STDSTRINGS", "SEARCHPATH", "BLOBS", "BLOB METADATA"}
_ENTRY = re.compile(r"^(?P<id>\d+); \d+ \d+ (?P<rest>.*)$")
_DEPENDS = re.compile(r"^;\s*depends on:(?P<ids>[\d ]*)$")


@dataclass
class TocEntry:
    dump_id: int
    description: str
    # "schema name owner" as pg_restore prints it (schema "-" for objects outside schemas).
    text: str
    line: str
    depends_on: list[int] = field(default_factory=list)

    def names(self, schema: str, name: str) -> bool:
        return self.text == f"{schema} {name}" or self.text.startswith(f"{schema} {name} ")

    def in_schema(self, schema: str) -> bool:
        return self.text.startswith(f"{schema} ")


def parse_listing(listing: str) -> list[TocEntry]:
    """The entries of `pg_restore -l --verbose` output, with their dependencies."""
    entries: list[TocEntry] = []
    for line in listing.splitlines():
        depends = _DEPENDS.match(line)
        if depends is not None and entries:
            entries[-1].depends_on.extend(int(i) for i in depends["ids"].split())
            continue
        match = _ENTRY.match(line)
        if match is None:
            continue
        rest = match["rest"]
        description = next((d for d in DESCRIPTIONS if rest.startswith(f"{d} ") or rest == d), None)
        if description is None:
            continue
        entries.append(TocEntry(int(match["id"]), description, rest[len(description) + 1 :], line))
    return entries


@dataclass
class Selection:
    entries: list[TocEntry]
    tables: list[tuple[str, str]]  # (schema, name), the chosen ones and their partitions
    partitions: list[tuple[str, str]]

    def listing(self) -> str:
        """The list file for `pg_restore -L`, in the archive's order."""
        return "".join(f"{entry.line}\n" for entry in self.entries)


def select_entries(
    entries: list[TocEntry],
    *,
    tables: Iterable[tuple[str, str]] = (),
    schemas: Iterable[str] = (),
    defined: Set[tuple[str, str, str]] = frozenset(),
    known_tables: Iterable[tuple[str, str]] = (),
) -> Selection:
    """The entries that restore `tables` (with partitions) and `schemas` into a target that
    already has `defined` objects: (kind, schema, name) with schema "-" for schemas and
    extensions, a function's name with its identity arguments."""
    by_id = {entry.dump_id: entry for entry in entries}
    chosen: set[int] = set()
    for schema, name in tables:
        chosen |= {e.dump_id for e in entries if e.description == "TABLE" and e.names(schema, name)}
    for schema in schemas:
        chosen |= {
            e.dump_id
            for e in entries
            if e.description not in _NEVER and e.description != "SCHEMA" and e.in_schema(schema)
        }
        chosen |= {e.dump_id for e in entries if e.description == "SCHEMA" and e.names("-", schema)}
    partitions = _partitions_of(chosen, entries, by_id)
    chosen |= partitions
    satisfied: set[int] = set()  # prerequisites the target has already

    def provide(dependency: int) -> bool:
        """Is `dependency` restored or on the target, once missing prerequisites are added?"""
        entry = by_id.get(dependency)
        if entry is None or dependency in chosen or dependency in satisfied:
            return True  # not in the archive (e.g. schema public), or already settled
        if entry.description not in PREREQUISITES:
            return False
        if _exists(entry, defined):
            satisfied.add(dependency)
        else:
            chosen.add(dependency)
            for further in entry.depends_on:
                provide(further)
        return True

    for dump_id in list(chosen):
        for dependency in by_id[dump_id].depends_on:
            provide(dependency)
    # What belongs to the restored objects, when everything it needs is there (or can be).
    while True:
        belongings = [
            e
            for e in entries
            if e.dump_id not in chosen
            and e.description in BELONGINGS
            and set(e.depends_on) & chosen
            and all(
                d in chosen or d in satisfied or d not in by_id or by_id[d].description in PREREQUISITES
                for d in e.depends_on
            )
        ]
        if not belongings:
            break
        for entry in belongings:
            chosen.add(entry.dump_id)
            for dependency in entry.depends_on:
                provide(dependency)
    selected = [e for e in entries if e.dump_id in chosen]
    known = sorted(set(known_tables) | set(tables), key=lambda t: -len(t[0]) - len(t[1]))
    return Selection(
        entries=selected,
        tables=[_table_name(e, known) for e in selected if e.description == "TABLE"],
        partitions=[_table_name(by_id[i], known) for i in sorted(partitions)],
    )


def _partitions_of(chosen: set[int], entries: list[TocEntry], by_id: dict[int, TocEntry]) -> set[int]:
    """The partitions of the chosen tables, at every level: every TABLE ATTACH that depends on a
    chosen table (or a partition found so far) brings its other table."""
    partitions: set[int] = set()
    while True:
        found = (
            {
                dependency
                for e in entries
                if e.description == "TABLE ATTACH" and set(e.depends_on) & (chosen | partitions)
                for dependency in e.depends_on
                if dependency in by_id and by_id[dependency].description == "TABLE"
            }
            - chosen
            - partitions
        )
        if not found:
            return partitions
        partitions |= found


def _exists(entry: TocEntry, defined: Set[tuple[str, str, str]]) -> bool:
    return any(kind == entry.description and entry.names(schema, name) for kind, schema, name in defined)


def _table_name(entry: TocEntry, known: list[tuple[str, str]]) -> tuple[str, str]:
    """(schema, name) of a TABLE entry: one of the backup's tables when it matches (names and
    owners may hold spaces), else the first two words."""
    for schema, name in known:
        if entry.names(schema, name):
            return schema, name
    schema, _, rest = entry.text.partition(" ")
    return schema, rest.split(" ", 1)[0]
