"""The cluster's roles as a backup stored them (`pg_dumpall --globals-only`), and the statements
that bring back exactly the roles a restore lacks.

The globals text cannot be fed to a server as one script: pg_dumpall 18 wraps it in psql
meta-commands (``\\restrict KEY`` / ``\\unrestrict KEY``) and it holds roles the target already
has (``postgres`` at least), which must never be altered by a restore. So the text is split into
statements here (``;`` outside quotes ends one; ``--`` comments, ``\\`` meta-commands and ``SET``
lines are skipped) and each statement is read for the role it is about. Pure: no I/O, so that a
restore can show the operator what it will create before anything is touched.

What a restore creates, for the roles it needs and the target lacks:
- ``CREATE ROLE`` and ``ALTER ROLE ... WITH ...`` (with ``PASSWORD`` only when the dump had one:
  a backup taken with ``--no-role-passwords`` brings roles back without a password);
- their settings (``ALTER ROLE ... SET``; ``IN DATABASE`` ones only for databases that exist);
- memberships between roles that exist or are created, when one side is new (``GRANTED BY``
  is left out: the grantor of the source cluster need not exist, nor be the restoring user).
Tablespaces are read but never created: their locations are the lost server's paths.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

_BARE_IDENTIFIER = re.compile(r"[^\s\";,]+")
_GRANTED_BY = re.compile(r"\s+GRANTED BY\s+(?:\"(?:[^\"]|\"\")+\"|[^\s;]+)\s*$")


class GlobalsUnreadable(ValueError):
    """The globals text holds a statement about roles that cannot be read."""


def statements(text: str) -> Iterator[str]:
    """The SQL statements of pg_dumpall's output, without comments, meta-commands and SET lines."""
    current: list[str] = []
    quote: str | None = None
    for line in text.splitlines():
        if quote is None and not current:
            stripped = line.strip()
            if not stripped or stripped.startswith(("--", "\\")) or stripped.upper().startswith("SET "):
                continue
        current.append(line)
        for character in line:
            if quote is None and character in "'\"":
                quote = character
            elif character == quote:
                # A doubled quote closes and reopens: the state is right either way.
                quote = None
        if quote is None and line.rstrip().endswith(";"):
            yield "\n".join(current).strip()
            current = []
    if current:
        raise GlobalsUnreadable(f"the globals end inside a statement: {current[0][:80]!r}")


def read_identifier(text: str) -> tuple[str, str]:
    """(the identifier at the start of `text`, unquoted; the rest of `text`)."""
    text = text.lstrip()
    if text.startswith('"'):
        end = 1
        while True:
            end = text.find('"', end)
            if end < 0:
                raise GlobalsUnreadable(f"unterminated quoted name in {text[:80]!r}")
            if text[end + 1 : end + 2] == '"':
                end += 2
                continue
            return text[1:end].replace('""', '"'), text[end + 1 :]
    match = _BARE_IDENTIFIER.match(text)
    if match is None:
        raise GlobalsUnreadable(f"expected a name in {text[:80]!r}")
    return match.group(0), text[match.end() :]


def quote_identifier(name: str) -> str:
    """Always quoted, so that any name (capitals, spaces, quotes) reads back as itself."""
    return '"' + name.replace('"', '""') + '"'


def _has_password(attributes: str) -> bool:
    # Outside the quoted password itself, the word PASSWORD (not `PASSWORD NULL`).
    unquoted = re.sub(r"'(?:[^']|'')*'", "''", attributes)
    return re.search(r"\bPASSWORD\s+''", unquoted) is not None


@dataclass
class RoleDefinition:
    name: str
    statements: list[str] = field(default_factory=list)
    # (database or None, statement): ALTER ROLE ... [IN DATABASE db] SET ...
    settings: list[tuple[str | None, str]] = field(default_factory=list)
    has_password: bool = False


@dataclass(frozen=True)
class Membership:
    role: str
    member: str
    statement: str


@dataclass
class ClusterRoles:
    """What the globals text defines: roles, their memberships, tablespaces (names only)."""

    roles: dict[str, RoleDefinition] = field(default_factory=dict)
    memberships: list[Membership] = field(default_factory=list)
    tablespaces: list[str] = field(default_factory=list)


def parse_globals(text: str) -> ClusterRoles:
    """Read pg_dumpall --globals-only output; GlobalsUnreadable on a role statement it cannot read."""
    cluster = ClusterRoles()
    for statement in statements(text):
        words = statement.split(None, 2)
        head = " ".join(words[:2]).upper()
        if head == "CREATE ROLE":
            name, _ = read_identifier(words[2])
            cluster.roles.setdefault(name, RoleDefinition(name)).statements.append(statement)
        elif head == "ALTER ROLE":
            _alter_role(cluster, statement, words[2])
        elif head == "CREATE TABLESPACE":
            cluster.tablespaces.append(read_identifier(words[2])[0])
        elif words[0].upper() == "GRANT":
            _grant(cluster, statement)
        # Anything else (COMMENT ON ROLE, SECURITY LABEL, tablespace options) is not needed to
        # restore a database's owners and grants.
    return cluster


def _alter_role(cluster: ClusterRoles, statement: str, after_keyword: str) -> None:
    name, rest = read_identifier(after_keyword)
    role = cluster.roles.setdefault(name, RoleDefinition(name))
    rest_upper = rest.lstrip().upper()
    if rest_upper.startswith("WITH "):
        role.statements.append(statement)
        role.has_password = role.has_password or _has_password(rest)
    elif rest_upper.startswith("IN DATABASE "):
        database, _ = read_identifier(rest.lstrip()[len("IN DATABASE ") :])
        role.settings.append((database, statement))
    elif rest_upper.startswith(("SET ", "RESET ")):
        role.settings.append((None, statement))
    else:
        # RENAME and the like never appear in pg_dumpall's output; keep it with the role.
        role.statements.append(statement)


def _grant(cluster: ClusterRoles, statement: str) -> None:
    role, rest = read_identifier(statement[len("GRANT") :])
    if not rest.lstrip().upper().startswith("TO "):
        raise GlobalsUnreadable(f"cannot read the membership {statement[:120]!r}")
    member, _ = read_identifier(rest.lstrip()[3:])
    without_grantor = _GRANTED_BY.sub("", statement.rstrip().rstrip(";")) + ";"
    cluster.memberships.append(Membership(role, member, without_grantor))


@dataclass
class RoleCreation:
    """What a restore runs before pg_restore, and what it tells the operator."""

    statements: list[tuple[str, str]] = field(default_factory=list)  # (role, statement)
    created: list[str] = field(default_factory=list)
    without_password: list[str] = field(default_factory=list)
    # Needed and missing on the target, and not in the globals either: cannot be created.
    not_in_globals: list[str] = field(default_factory=list)
    skipped_settings: list[str] = field(default_factory=list)


def roles_to_create(
    cluster: ClusterRoles, needed: Iterable[str], existing: Iterable[str], databases: Iterable[str] = ()
) -> RoleCreation:
    """The statements that create the `needed` roles the target lacks (`existing` are never touched),
    their settings, and the memberships between roles that will exist where one side is new."""
    existing_roles = set(existing)
    existing_databases = set(databases)
    creation = RoleCreation()
    missing = sorted(set(needed) - existing_roles)
    creation.not_in_globals = [name for name in missing if name not in cluster.roles]
    creation.created = [name for name in missing if name in cluster.roles]
    for name in creation.created:
        role = cluster.roles[name]
        creation.statements.extend((name, statement) for statement in role.statements)
        if not role.has_password:
            creation.without_password.append(name)
    for name in creation.created:
        for database, statement in cluster.roles[name].settings:
            if database is None or database in existing_databases:
                creation.statements.append((name, statement))
            else:
                creation.skipped_settings.append(statement)
    new = set(creation.created)
    present = new | existing_roles
    for membership in cluster.memberships:
        if (
            membership.role in present
            and membership.member in present
            and new
            & {
                membership.role,
                membership.member,
            }
        ):
            creation.statements.append((membership.member, membership.statement))
    return creation
