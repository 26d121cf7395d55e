"""Masking for staging restores: rules per table and column, applied inside the restored database.

A rules file (YAML; `drsentry restore BACKUP_ID --to DSN --mask FILE`)::

    tables:
      profiles:
        key: id                  # what {id} stands for; default: the table's one-column primary key
        columns:
          email: email           # test-{id}@example.com
          phone: phone           # +1000000{id}
          full_name: name        # Test Customer {id}
          notes: null            # NULL (YAML null, or the word null)
          nickname: "user {id}"  # any other text is a template; {id} is the only placeholder
      sessions: truncate         # every row removed

`plan_recovery` checks the rules before anything is restored: every table against the
backup's manifest, and every column, key and template against the columns the archive's own
CREATE TABLEs list (archive_schema.py); a typo is bad input (exit 2) naming the rule.

Masking runs in one transaction of the restored database, with ``row_security = off`` so
no policy can hide a row from it (with FORCE RLS PostgreSQL errors instead). Before any
change, the digests of every original value of every masked column are kept in a
temporary table; after the changes, the same transaction proves that no value of a masked
column equals an original, that nulled columns hold only NULL and that truncated tables
are empty. Only then does it commit. Identifiers reach SQL only through ``psycopg.sql``.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import psycopg
import yaml
from psycopg import sql

from drsentry.core.errors import BadInput, DrsentryError

BUILT_IN_TEMPLATES = {
    "email": "test-{id}@example.com",
    "phone": "+1000000{id}",
    "name": "Test Customer {id}",
}
PLACEHOLDER = "{id}"
_BRACES_RE = re.compile(r"\{[^{}]*\}")
_TYPMOD_RE = re.compile(r"\([^)]*\)")
# Templates write text; a uuid, number or date column cannot take `Test Customer 42`.
TEXT_TYPES = frozenset({"text", "character varying", "character", "citext", "name"})


class MaskingFailed(DrsentryError):
    """Masking could not be applied, or an original value survived it."""


@dataclass(frozen=True)
class ColumnRule:
    column: str
    kind: Literal["template", "null"]
    template: str | None = None

    def describe(self) -> str:
        return "NULL" if self.kind == "null" else repr(self.template)


@dataclass(frozen=True)
class TableRule:
    table: str
    key: str | None = None
    columns: tuple[ColumnRule, ...] = ()
    truncate: bool = False

    @property
    def schema_and_name(self) -> tuple[str, str]:
        return split_table(self.table)


@dataclass(frozen=True)
class MaskingRules:
    tables: tuple[TableRule, ...]
    source: str = "mask rules"

    def for_tables(self, restored: set[str]) -> tuple[MaskingRules, list[str]]:
        """The rules for the tables a restore brings back, and the names of those it skips."""
        kept = tuple(rule for rule in self.tables if rule.table in restored)
        skipped = [rule.table for rule in self.tables if rule.table not in restored]
        return MaskingRules(kept, self.source), skipped

    def check_tables(self, backup_tables: Collection[str], backup_id: str) -> None:
        """BadInput naming the first rule for a table the backup does not have (a typo would
        otherwise leave the real table unmasked)."""
        for rule in self.tables:
            if rule.table not in backup_tables:
                raise BadInput(
                    f"{self.source}: tables.{rule.table}: backup {backup_id} has no table {rule.table}"
                    f"{_hint(rule.table, backup_tables)}"
                )

    def check_columns(self, columns_by_table: Mapping[str, Mapping[str, str]], backup_id: str) -> None:
        """BadInput naming the first column or key a table lacks, or a template for a column that
        does not hold text. `columns_by_table`: column -> type per table; tables it leaves out
        are checked after the restore only."""
        for rule in self.tables:
            columns = columns_by_table.get(rule.table)
            if columns is None:
                continue
            where = f"{self.source}: tables.{rule.table}"
            if rule.key is not None and rule.key not in columns:
                raise BadInput(
                    f"{where}.key: {rule.table} in backup {backup_id} has no column {rule.key}"
                    f"{_hint(rule.key, columns)}"
                )
            for column in rule.columns:
                if column.column not in columns:
                    raise BadInput(
                        f"{where}.columns.{column.column}: {rule.table} in backup {backup_id} has no column "
                        f"{column.column}{_hint(column.column, columns)}"
                    )
                problem = _type_problem(column, columns[column.column])
                if problem is not None:
                    raise BadInput(f"{where}.columns.{column.column}: {problem}")


def split_table(name: str) -> tuple[str, str]:
    """`profiles` -> (public, profiles); `audit.events` -> (audit, events): how pgmeta names tables."""
    schema, _, table = name.rpartition(".")
    return schema or "public", table


def _hint(name: str, known: Collection[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    if close:
        return f" (did you mean {close[0]}?)"
    return f" (it has: {', '.join(sorted(known))})" if known else ""


def _type_problem(column: ColumnRule, type_name: str) -> str | None:
    # `character varying(40)` and `public.citext` (as pg_dump writes them) are text too;
    # `character varying(40)[]` is an array.
    base_type = _TYPMOD_RE.sub("", type_name).strip().rpartition(".")[2].strip('"')
    if column.kind == "template" and base_type not in TEXT_TYPES:
        return f"a template writes text, the column is {type_name}; use null instead"
    return None


def template_parts(template: str) -> list[str | None]:
    """Literal text pieces, with None where the key goes: `a{id}b` -> ['a', None, 'b']."""
    parts: list[str | None] = []
    for index, piece in enumerate(template.split(PLACEHOLDER)):
        if index:
            parts.append(None)
        if piece:
            parts.append(piece)
    return parts


def render(template: str, key: object) -> str:
    """What masking writes for one row: the same text the SQL expression produces."""
    return "".join(str(key) if part is None else part for part in template_parts(template))


# the rules file ----------------------------------------------------------------------


def _column_rule(where: str, column: str, value: Any) -> ColumnRule:
    if value is None or (isinstance(value, str) and value.strip().lower() == "null"):
        return ColumnRule(column, "null")
    if not isinstance(value, str) or not value:
        raise BadInput(
            f"{where}: expected email, phone, name, null or a template text with {PLACEHOLDER}, got {value!r}"
        )
    template = BUILT_IN_TEMPLATES.get(value.strip().lower(), value)
    unknown = [found for found in _BRACES_RE.findall(template) if found != PLACEHOLDER]
    if unknown:
        raise BadInput(f"{where}: unknown placeholder {unknown[0]} (only {PLACEHOLDER} is known)")
    return ColumnRule(column, "template", template)


def _table_rule(source: str, table: str, value: Any) -> TableRule:
    where = f"{source}: tables.{table}"
    if not table or table.count(".") > 1:
        raise BadInput(f"{where}: write a table as name or schema.name")
    if isinstance(value, str) and value.strip().lower() == "truncate":
        return TableRule(_canonical(table), truncate=True)
    if not isinstance(value, dict):
        raise BadInput(f"{where}: expected `truncate` or a mapping with columns (and optionally key)")
    unknown = sorted(set(value) - {"key", "columns", "truncate"})
    if unknown:
        raise BadInput(f"{where}.{unknown[0]}: unknown field (known: key, columns, truncate)")
    truncate = value.get("truncate", False)
    if not isinstance(truncate, bool):
        raise BadInput(f"{where}.truncate: expected true or false")
    columns = value.get("columns") or {}
    if not isinstance(columns, dict):
        raise BadInput(f"{where}.columns: expected a mapping of column to rule")
    if truncate and columns:
        raise BadInput(f"{where}: a truncated table has no rows left to mask; drop columns or truncate")
    key = value.get("key")
    if key is not None and (not isinstance(key, str) or not key):
        raise BadInput(f"{where}.key: expected a column name")
    if not truncate and not columns:
        raise BadInput(f"{where}: no columns to mask and not truncated")
    rules = tuple(_column_rule(f"{where}.columns.{name}", str(name), rule) for name, rule in columns.items())
    if key is not None and any(rule.column == key for rule in rules):
        raise BadInput(
            f"{where}.columns.{key}: the key column cannot be masked ({PLACEHOLDER} is made of it)"
        )
    return TableRule(_canonical(table), key=key, columns=rules, truncate=truncate)


def _canonical(table: str) -> str:
    # `public.profiles` is `profiles` in the manifest and in every report.
    schema, name = split_table(table)
    return name if schema == "public" else f"{schema}.{name}"


def parse_rules(text: str, source: str = "mask rules") -> MaskingRules:
    """Validate a rules file; BadInput with one line naming the field."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise BadInput(f"{source}: malformed YAML{where}") from exc
    if not isinstance(raw, dict) or set(raw) != {"tables"} or not isinstance(raw["tables"], dict):
        raise BadInput(f"{source}: expected one mapping `tables:` of table name to rule")
    if not raw["tables"]:
        raise BadInput(f"{source}: tables: no rules")
    rules = tuple(_table_rule(source, str(table), rule) for table, rule in raw["tables"].items())
    seen: set[str] = set()
    for table, rule in zip(raw["tables"], rules, strict=True):
        if rule.table in seen:
            raise BadInput(f"{source}: tables.{table}: a second rule for {rule.table}")
        seen.add(rule.table)
    return MaskingRules(rules, source)


def load_rules(path: Path) -> MaskingRules:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise BadInput(f"cannot read mask rules {path}: {exc.strerror or exc}") from exc
    return parse_rules(text, str(path))


# applying them -----------------------------------------------------------------------


@dataclass
class ColumnProof:
    table: str
    column: str
    rule: str
    originals: int
    survivors: int

    @property
    def holds(self) -> bool:
        return self.survivors == 0


@dataclass
class MaskingReport:
    masked_rows: dict[str, int] = field(default_factory=dict)
    truncated: dict[str, int] = field(default_factory=dict)
    proofs: list[ColumnProof] = field(default_factory=list)

    @property
    def holds(self) -> bool:
        return all(proof.holds for proof in self.proofs)

    def summary(self) -> str:
        columns = len(self.proofs)
        rows = sum(self.masked_rows.values())
        return (
            f"{rows:,} rows in {len(self.masked_rows)} table(s) masked ({columns} column(s)), "
            f"{len(self.truncated)} table(s) truncated; no original value of a masked column survives"
        )


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _qualified(rule: TableRule) -> sql.Composed:
    schema, name = rule.schema_and_name
    return sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(name))


def _columns_of(conn: psycopg.Connection, rule: TableRule) -> dict[str, str]:
    schema, name = rule.schema_and_name
    rows = conn.execute(
        """
        select a.attname, format_type(a.atttypid, null)
        from pg_attribute a
        join pg_class c on c.oid = a.attrelid
        join pg_namespace n on n.oid = c.relnamespace
        where n.nspname = %s and c.relname = %s and c.relkind in ('r', 'p') and a.attnum > 0
          and not a.attisdropped
        """,
        (schema, name),
    ).fetchall()
    if not rows:
        raise MaskingFailed(f"mask rule for {rule.table}: no such table in the restored database")
    return {str(column): str(type_name) for column, type_name in rows}


def _primary_key(conn: psycopg.Connection, rule: TableRule) -> list[str]:
    schema, name = rule.schema_and_name
    rows = conn.execute(
        """
        select a.attname
        from pg_index i
        join pg_class c on c.oid = i.indrelid
        join pg_namespace n on n.oid = c.relnamespace
        join pg_attribute a on a.attrelid = c.oid and a.attnum = any(i.indkey)
        where n.nspname = %s and c.relname = %s and i.indisprimary
        """,
        (schema, name),
    ).fetchall()
    return [str(row[0]) for row in rows]


def _key_column(conn: psycopg.Connection, rule: TableRule, columns: dict[str, str]) -> str:
    if rule.key is not None:
        if rule.key not in columns:
            raise MaskingFailed(f"mask rule for {rule.table}: key column {rule.key} does not exist")
        return rule.key
    primary = _primary_key(conn, rule)
    if len(primary) == 1:
        return primary[0]
    if "id" in columns:
        return "id"
    raise MaskingFailed(
        f"mask rule for {rule.table}: no one-column primary key and no id column; set `key:` to the "
        f"column that {PLACEHOLDER} stands for"
    )


def _masked_value(rule: ColumnRule, key: str) -> sql.Composable:
    if rule.kind == "null" or rule.template is None:
        return sql.NULL
    pieces: list[sql.Composable] = [
        sql.SQL("{}::text").format(sql.Identifier(key)) if part is None else sql.Literal(part)
        for part in template_parts(rule.template)
    ]
    # concat() reads a NULL key as empty text instead of making the whole value NULL.
    return sql.SQL("concat({})").format(sql.SQL(", ").join(pieces)) if pieces else sql.Literal("")


def _check_column(rule: TableRule, column: ColumnRule, columns: dict[str, str]) -> None:
    if column.column not in columns:
        raise MaskingFailed(f"mask rule for {rule.table}: column {column.column} does not exist")
    problem = _type_problem(column, columns[column.column])
    if problem is not None:
        raise MaskingFailed(f"mask rule for {rule.table}.{column.column}: {problem}")


def apply_masking(conn: psycopg.Connection, rules: MaskingRules) -> MaskingReport:
    """Mask, prove, commit: one transaction. Raises MaskingFailed (and rolls back) when a rule
    does not fit the database or the proof finds an original value."""
    report = MaskingReport()
    try:
        with conn.transaction():
            _mask_and_prove(conn, rules, report)
    except psycopg.Error as exc:
        raise MaskingFailed(f"masking failed, nothing masked: {_first_line(exc)}") from exc
    return report


def _mask_and_prove(conn: psycopg.Connection, rules: MaskingRules, report: MaskingReport) -> None:
    conn.execute("set local row_security = off")
    conn.execute("create temporary table drsentry_mask_originals (rule int, digest text) on commit drop")
    plans: list[tuple[TableRule, str, list[tuple[int, ColumnRule]]]] = []
    rule_number = 0
    for table_rule in rules.tables:
        columns = _columns_of(conn, table_rule)
        if table_rule.truncate:
            continue
        key = _key_column(conn, table_rule, columns)
        numbered: list[tuple[int, ColumnRule]] = []
        for column in table_rule.columns:
            _check_column(table_rule, column, columns)
            rule_number += 1
            numbered.append((rule_number, column))
        plans.append((table_rule, key, numbered))

    # Every original value, before any change, in this transaction's snapshot of the restore.
    for table_rule, _key, numbered in plans:
        for number, column in numbered:
            conn.execute(
                sql.SQL(
                    "insert into drsentry_mask_originals select {number}, md5({column}::text) "
                    "from {table} where {column} is not null"
                ).format(
                    number=sql.Literal(number),
                    column=sql.Identifier(column.column),
                    table=_qualified(table_rule),
                )
            )
    conn.execute("create index on drsentry_mask_originals (rule, digest)")
    conn.execute("analyze drsentry_mask_originals")

    for table_rule, key, numbered in plans:
        assignments = sql.SQL(", ").join(
            sql.SQL("{} = {}").format(sql.Identifier(column.column), _masked_value(column, key))
            for _number, column in numbered
        )
        cursor = conn.execute(
            sql.SQL("update {table} set {assignments}").format(
                table=_qualified(table_rule), assignments=assignments
            )
        )
        report.masked_rows[table_rule.table] = max(cursor.rowcount, 0)

    truncated = [rule for rule in rules.tables if rule.truncate]
    for rule in truncated:
        row = conn.execute(sql.SQL("select count(*) from {}").format(_qualified(rule))).fetchone()
        report.truncated[rule.table] = int(row[0]) if row else 0
    if truncated:
        # One statement, so tables that reference each other can all go together.
        conn.execute(
            sql.SQL("truncate {}").format(sql.SQL(", ").join(_qualified(rule) for rule in truncated))
        )

    _prove(conn, plans, truncated, report)


def _prove(
    conn: psycopg.Connection,
    plans: list[tuple[TableRule, str, list[tuple[int, ColumnRule]]]],
    truncated: list[TableRule],
    report: MaskingReport,
) -> None:
    for table_rule, _key, numbered in plans:
        for number, column in numbered:
            originals_row = conn.execute(
                "select count(*) from drsentry_mask_originals where rule = %s", (number,)
            ).fetchone()
            if column.kind == "null":
                query = sql.SQL("select count(*) from {table} where {column} is not null")
            else:
                query = sql.SQL(
                    "select count(*) from {table} t join drsentry_mask_originals o "
                    "on o.rule = {number} and o.digest = md5(t.{column}::text)"
                )
            survivors_row = conn.execute(
                query.format(
                    table=_qualified(table_rule),
                    column=sql.Identifier(column.column),
                    number=sql.Literal(number),
                )
            ).fetchone()
            report.proofs.append(
                ColumnProof(
                    table=table_rule.table,
                    column=column.column,
                    rule=column.describe(),
                    originals=int(originals_row[0]) if originals_row else 0,
                    survivors=int(survivors_row[0]) if survivors_row else 0,
                )
            )
    for rule in truncated:
        row = conn.execute(sql.SQL("select exists (select 1 from {})").format(_qualified(rule))).fetchone()
        if row and row[0]:
            raise MaskingFailed(f"{rule.table} still has rows after truncate")
    failed = [proof for proof in report.proofs if not proof.holds]
    if failed:
        first = failed[0]
        raise MaskingFailed(
            f"{first.table}.{first.column}: {first.survivors:,} value(s) still equal an original value after "
            f"masking with {first.rule}; nothing masked (rolled back)"
        )
