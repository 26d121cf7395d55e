"""What a database holds, read through one connection: tables and exact row counts,
functions, row-level security, size, and a schema fingerprint.

Backup reads it inside the exported snapshot that pg_dump dumps, verify reads it from the
restored database, and the two must agree. The fingerprint leaves out owners, grants and
OIDs, which a restore into another server legitimately changes; owners and grants are read
on their own (`referenced_roles`, `table_acls`) so that a restore keeping them can be checked.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

_USER_SCHEMAS = """
    n.nspname not in ('pg_catalog', 'information_schema')
    and n.nspname not like 'pg\\_toast%' and n.nspname not like 'pg\\_temp\\_%'
"""
_NOT_FROM_EXTENSION = """
    not exists (select 1 from pg_depend d where d.objid = {oid} and d.deptype = 'e')
"""

TABLES_SQL = f"""
select n.nspname, c.relname
from pg_class c join pg_namespace n on n.oid = c.relnamespace
where c.relkind in ('r', 'p') and {_USER_SCHEMAS} and {_NOT_FROM_EXTENSION.format(oid="c.oid")}
order by 1, 2
"""

FUNCTIONS_SQL = f"""
select n.nspname, p.proname, pg_get_function_identity_arguments(p.oid)
from pg_proc p join pg_namespace n on n.oid = p.pronamespace
where {_USER_SCHEMAS} and {_NOT_FROM_EXTENSION.format(oid="p.oid")}
order by 1, 2, 3
"""

RLS_SQL = f"""
select n.nspname, c.relname, c.relrowsecurity, c.relforcerowsecurity,
       coalesce(array_agg(p.polname order by p.polname) filter (where p.polname is not null), '{{}}')
from pg_class c
join pg_namespace n on n.oid = c.relnamespace
left join pg_policy p on p.polrelid = c.oid
where c.relkind in ('r', 'p') and {_USER_SCHEMAS}
  and (c.relrowsecurity or p.polname is not null)
group by 1, 2, 3, 4
order by 1, 2
"""

# One text row per schema object, normalised so that dump and restore give equal text.
FINGERPRINT_SQL = f"""
select 'column ' || n.nspname || '.' || c.relname || ' '
       || string_agg(a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
                     || case when a.attnotnull then ' not null' else '' end
                     || coalesce(' default ' || pg_get_expr(ad.adbin, ad.adrelid), ''),
                     ', ' order by a.attnum)
from pg_class c
join pg_namespace n on n.oid = c.relnamespace
join pg_attribute a on a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped
left join pg_attrdef ad on ad.adrelid = c.oid and ad.adnum = a.attnum
where c.relkind in ('r', 'p', 'v', 'm', 'f') and {_USER_SCHEMAS}
group by n.nspname, c.relname
union all
select 'constraint ' || n.nspname || '.' || c.relname || ' ' || con.conname || ' '
       || pg_get_constraintdef(con.oid)
from pg_constraint con
join pg_class c on c.oid = con.conrelid
join pg_namespace n on n.oid = c.relnamespace
-- PostgreSQL 18 also lists NOT NULL as constraints ('n'); the column lines carry it already,
-- and leaving them out keeps fingerprints comparable across server majors.
where con.contype <> 'n' and {_USER_SCHEMAS}
union all
select 'index ' || pg_get_indexdef(i.indexrelid)
from pg_index i
join pg_class c on c.oid = i.indexrelid
join pg_namespace n on n.oid = c.relnamespace
where {_USER_SCHEMAS}
union all
select 'function ' || pg_get_functiondef(p.oid)
from pg_proc p join pg_namespace n on n.oid = p.pronamespace
where p.prokind in ('f', 'p') and {_USER_SCHEMAS} and {_NOT_FROM_EXTENSION.format(oid="p.oid")}
union all
select 'policy ' || n.nspname || '.' || c.relname || ' ' || p.polname || ' ' || p.polcmd::text || ' '
       || p.polpermissive::text || ' ' || coalesce(pg_get_expr(p.polqual, p.polrelid), '') || ' '
       || coalesce(pg_get_expr(p.polwithcheck, p.polrelid), '')
from pg_policy p
join pg_class c on c.oid = p.polrelid
join pg_namespace n on n.oid = c.relnamespace
union all
select 'rls ' || n.nspname || '.' || c.relname || ' ' || c.relrowsecurity::text || ' '
       || c.relforcerowsecurity::text
from pg_class c join pg_namespace n on n.oid = c.relnamespace
where c.relkind in ('r', 'p') and {_USER_SCHEMAS}
union all
select 'trigger ' || pg_get_triggerdef(t.oid)
from pg_trigger t
join pg_class c on c.oid = t.tgrelid
join pg_namespace n on n.oid = c.relnamespace
where not t.tgisinternal and {_USER_SCHEMAS}
union all
select 'view ' || n.nspname || '.' || c.relname || ' ' || pg_get_viewdef(c.oid)
from pg_class c join pg_namespace n on n.oid = c.relnamespace
where c.relkind in ('v', 'm') and {_USER_SCHEMAS}
"""


# Every role the database names: owners of its objects, grantees of their ACLs (and of the
# default ACLs), the roles of its RLS policies, then, transitively, the roles those are members
# of. Objects of extensions are left out (CREATE EXTENSION makes them, owned by the restoring
# user); predefined roles (pg_*) exist on every server; 0 is PUBLIC.
_OWNED = f"""
select nspowner, nspacl from pg_namespace n
 where {_USER_SCHEMAS} and {_NOT_FROM_EXTENSION.format(oid="n.oid")}
union all
select c.relowner, c.relacl from pg_class c join pg_namespace n on n.oid = c.relnamespace
 where {_USER_SCHEMAS} and {_NOT_FROM_EXTENSION.format(oid="c.oid")}
union all
select p.proowner, p.proacl from pg_proc p join pg_namespace n on n.oid = p.pronamespace
 where {_USER_SCHEMAS} and {_NOT_FROM_EXTENSION.format(oid="p.oid")}
union all
select t.typowner, t.typacl from pg_type t join pg_namespace n on n.oid = t.typnamespace
 where {_USER_SCHEMAS} and {_NOT_FROM_EXTENSION.format(oid="t.oid")}
union all
select d.datdba, d.datacl from pg_database d where d.datname = current_database()
union all
select m.lomowner, m.lomacl from pg_largeobject_metadata m
union all
select s.srvowner, s.srvacl from pg_foreign_server s where {_NOT_FROM_EXTENSION.format(oid="s.oid")}
union all
select f.fdwowner, f.fdwacl from pg_foreign_data_wrapper f where {_NOT_FROM_EXTENSION.format(oid="f.oid")}
union all
select e.evtowner, null::aclitem[] from pg_event_trigger e
union all
select pub.pubowner, null::aclitem[] from pg_publication pub
"""

REFERENCED_ROLES_SQL = f"""
with recursive owned(owner, acl) as ({_OWNED}),
direct(role) as (
    select owner from owned
    union
    select (aclexplode(acl)).grantee from owned where acl is not null
    union
    select (aclexplode(a.attacl)).grantee
      from pg_attribute a join pg_class c on c.oid = a.attrelid join pg_namespace n on n.oid = c.relnamespace
     where a.attacl is not null and {_USER_SCHEMAS}
    union
    select d.defaclrole from pg_default_acl d
    union
    select (aclexplode(d.defaclacl)).grantee from pg_default_acl d
    union
    select unnest(p.polroles) from pg_policy p
),
referenced(role) as (
    select role from direct where role <> 0
    union
    select m.roleid from pg_auth_members m join referenced r on m.member = r.role
)
select distinct a.rolname from referenced r join pg_roles a on a.oid = r.role
where a.rolname not like 'pg\\_%'
order by 1
"""

# Owner and grants of every table, sequence, view, materialized view and foreign table. A
# relation that was never granted has no ACL: its default (the owner's privileges) is made
# explicit, so that "never granted" and "granted what the default is" compare equal.
_GRANTEE = "case when x.grantee = 0 then 'PUBLIC' else pg_get_userbyid(x.grantee) end"
_PRIVILEGE = "x.privilege_type || case when x.is_grantable then '*' else '' end"
RELATION_ACL_SQL = f"""
select n.nspname, c.relname, pg_get_userbyid(c.relowner),
       coalesce(array_agg({_GRANTEE} order by 1) filter (where x.grantee is not null), '{{}}'),
       coalesce(array_agg({_PRIVILEGE} order by 1) filter (where x.grantee is not null), '{{}}')
from pg_class c
join pg_namespace n on n.oid = c.relnamespace
left join lateral aclexplode(
    coalesce(c.relacl, acldefault(case when c.relkind = 'S' then 's' else 'r' end::"char", c.relowner))
) x on true
where c.relkind in ('r', 'p', 'S', 'v', 'm', 'f') and {_USER_SCHEMAS}
  and {_NOT_FROM_EXTENSION.format(oid="c.oid")}
group by n.nspname, c.relname, c.relowner
union all
select n.nspname, c.relname || '.' || a.attname, pg_get_userbyid(c.relowner),
       array_agg({_GRANTEE} order by 1), array_agg({_PRIVILEGE} order by 1)
from pg_attribute a
join pg_class c on c.oid = a.attrelid
join pg_namespace n on n.oid = c.relnamespace
cross join lateral aclexplode(a.attacl) x
where a.attacl is not null and not a.attisdropped and {_USER_SCHEMAS}
group by n.nspname, c.relname, a.attname, c.relowner
"""


def display_name(schema: str, name: str) -> str:
    """`organizations` for public tables, `audit.events` elsewhere: how users write them."""
    return name if schema == "public" else f"{schema}.{name}"


@dataclass(frozen=True)
class RlsTable:
    table: str
    enabled: bool
    forced: bool
    policies: tuple[str, ...]


@dataclass(frozen=True)
class RelationAcl:
    """Who owns a relation and what each role may do with it: `grantee=PRIV,PRIV` (a `*` after
    a privilege the grantee may grant on), one entry per grantee, sorted; `PUBLIC` is everyone."""

    owner: str
    grants: tuple[str, ...]

    def manifest_entry(self) -> dict[str, object]:
        return {"owner": self.owner, "grants": list(self.grants)}


@dataclass
class DatabaseFacts:
    server_version: str
    database_size_bytes: int
    tables: dict[str, int] = field(default_factory=dict)
    functions: list[str] = field(default_factory=list)
    rls: list[RlsTable] = field(default_factory=list)
    schema_fingerprint: str = ""
    # The roles the database references (sorted) and the owner and grants of every relation
    # (`display_name`; a column's grants under `table.column`).
    roles: list[str] = field(default_factory=list)
    acl: dict[str, RelationAcl] = field(default_factory=dict)

    def manifest_fields(self) -> dict[str, object]:
        return {
            "pg_server_version": self.server_version,
            "database_size_bytes": self.database_size_bytes,
            "tables": self.tables,
            "functions": self.functions,
            "rls": [
                {"table": t.table, "enabled": t.enabled, "forced": t.forced, "policies": list(t.policies)}
                for t in self.rls
            ],
            "schema_fingerprint": self.schema_fingerprint,
            "acl": {name: acl.manifest_entry() for name, acl in sorted(self.acl.items())},
        }


def server_version(conn: psycopg.Connection) -> str:
    row = conn.execute("show server_version").fetchone()
    assert row is not None
    return str(row[0]).split()[0]


def schema_fingerprint(conn: psycopg.Connection) -> str:
    lines = sorted(str(row[0]) for row in conn.execute(FINGERPRINT_SQL))
    digest = hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()
    return f"sha256:{digest}"


def table_names(conn: psycopg.Connection) -> list[str]:
    """Every user table (partitioned parents too), as `display_name` writes it."""
    return [display_name(schema, name) for schema, name in conn.execute(TABLES_SQL).fetchall()]


def database_size(conn: psycopg.Connection) -> int:
    row = conn.execute("select pg_database_size(current_database())").fetchone()
    assert row is not None
    return int(row[0])


def count_rows(conn: psycopg.Connection) -> dict[str, int]:
    counts: dict[str, int] = {}
    for schema, name in conn.execute(TABLES_SQL).fetchall():
        query = sql.SQL("select count(*) from {}.{}").format(sql.Identifier(schema), sql.Identifier(name))
        row = conn.execute(query).fetchone()
        assert row is not None
        counts[display_name(schema, name)] = int(row[0])
    return counts


def functions(conn: psycopg.Connection) -> list[str]:
    return [
        f"{display_name(schema, name)}({arguments})"
        for schema, name, arguments in conn.execute(FUNCTIONS_SQL).fetchall()
    ]


def rls_tables(conn: psycopg.Connection) -> list[RlsTable]:
    return [
        RlsTable(display_name(schema, name), bool(enabled), bool(forced), tuple(policies))
        for schema, name, enabled, forced, policies in conn.execute(RLS_SQL).fetchall()
    ]


def referenced_roles(conn: psycopg.Connection) -> list[str]:
    """The roles a restore of this database must find or create, sorted."""
    return [str(row[0]) for row in conn.execute(REFERENCED_ROLES_SQL)]


def acl_grants(grantees: list[str], privileges: list[str]) -> tuple[str, ...]:
    """`grantee=PRIV,PRIV` per grantee, privileges and grantees sorted: one entry per role, so
    that grants given in one statement or in several compare equal."""
    by_grantee: dict[str, set[str]] = {}
    for grantee, privilege in zip(grantees, privileges, strict=True):
        by_grantee.setdefault(grantee, set()).add(privilege)
    return tuple(f"{grantee}={','.join(sorted(privs))}" for grantee, privs in sorted(by_grantee.items()))


def table_acls(conn: psycopg.Connection) -> dict[str, RelationAcl]:
    """Owner and grants of every relation; a column's grants under `table.column`."""
    return {
        display_name(schema, name): RelationAcl(str(owner), acl_grants(grantees, privileges))
        for schema, name, owner, grantees, privileges in conn.execute(RELATION_ACL_SQL).fetchall()
    }


def can_read_role_passwords(conn: psycopg.Connection) -> bool:
    """Whether pg_dumpall may read pg_authid (superusers, or a user granted it). RDS and Aurora
    master users are not superusers: their roles are dumped without passwords."""
    row = conn.execute("select has_table_privilege('pg_catalog.pg_authid', 'select')").fetchone()
    return bool(row and row[0])


def read_facts(conn: psycopg.Connection) -> DatabaseFacts:
    """Everything at once; call inside the transaction whose snapshot matters."""
    return DatabaseFacts(
        server_version=server_version(conn),
        database_size_bytes=database_size(conn),
        tables=count_rows(conn),
        functions=functions(conn),
        rls=rls_tables(conn),
        schema_fingerprint=schema_fingerprint(conn),
        roles=referenced_roles(conn),
        acl=table_acls(conn),
    )
