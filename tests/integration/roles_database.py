"""A database whose table is owned by one role (itself a member of a group), granted to a
second (a column grant too), with an RLS policy naming a third; a fifth role exists on the
server but the database never uses it. Shared by the roles-object and verify-with-roles tests."""

from __future__ import annotations

import secrets

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo


class RolesDatabase:
    def __init__(self, admin_dsn: str, prefix: str) -> None:
        self.admin_dsn = admin_dsn
        suffix = secrets.token_hex(3)
        self.owner = f"{prefix}_owner_{suffix}"
        self.reader = f"{prefix}_reader_{suffix}"
        self.policy_role = f"{prefix}_policy_{suffix}"
        self.owner_group = f"{prefix}_group_{suffix}"
        self.unrelated = f"{prefix}_unrelated_{suffix}"
        self.dbname = f"{prefix}_roles_{suffix}"
        self.dsn = make_conninfo(admin_dsn, dbname=self.dbname)
        # Roles a test creates for itself, dropped with the others.
        self.extra_roles: list[str] = []

    def referenced_roles(self) -> list[str]:
        """The roles the database references, a group before its member."""
        return [self.owner_group, self.owner, self.reader, self.policy_role]

    def create(self) -> None:
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            for role in (*self.referenced_roles(), self.unrelated):
                conn.execute(f'create role "{role}"'.encode())
            conn.execute(f'grant "{self.owner_group}" to "{self.owner}"'.encode())
            conn.execute(f'create database "{self.dbname}"'.encode())
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(
                f"""
                create schema billing;
                create table billing.invoices (id bigint generated always as identity primary key,
                                               customer text not null, amount numeric not null);
                insert into billing.invoices (customer, amount)
                    select 'customer ' || n, n from generate_series(1, 50) n;
                alter table billing.invoices owner to "{self.owner}";
                grant usage on schema billing to "{self.reader}";
                grant select on billing.invoices to "{self.reader}";
                grant update (amount) on billing.invoices to "{self.reader}";
                alter table billing.invoices enable row level security;
                create policy customer_rows on billing.invoices to "{self.policy_role}"
                    using (customer = current_user);
                """.encode()
            )

    def drop(self) -> None:
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            conn.execute(f'drop database if exists "{self.dbname}" with (force)'.encode())
            for role in reversed([*self.referenced_roles(), self.unrelated, *self.extra_roles]):
                conn.execute(f'drop role if exists "{role}"'.encode())

    def admin_user(self) -> str:
        return str(conninfo_to_dict(self.admin_dsn)["user"])
