"""Reading pg_dumpall --globals-only and choosing the statements that create only the missing roles."""
# ruff: noqa: E501  (the globals are quoted verbatim: pg_dumpall writes one statement a line)

from __future__ import annotations

import pytest

from drsentry.core.globals import GlobalsUnreadable, parse_globals, roles_to_create, statements

# pg_dumpall 18.6 --globals-only --no-role-passwords, as it prints them (one role renamed to
# need quotes), plus a role with a password and a database-specific setting.
GLOBALS = '''--
-- PostgreSQL database cluster dump
--

\\restrict k32zrsNTNbi2BMIbthZn9WUT3SCQpwAxxPR9QOAqQVPMQImHD774UZL1gO9YpB9

SET default_transaction_read_only = off;

SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;

--
-- Roles
--

CREATE ROLE authenticated;
ALTER ROLE authenticated WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB NOLOGIN NOREPLICATION NOBYPASSRLS;
CREATE ROLE "App Owner; ""quoted""";
ALTER ROLE "App Owner; ""quoted""" WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB NOLOGIN NOREPLICATION NOBYPASSRLS;
CREATE ROLE fidelity_app;
ALTER ROLE fidelity_app WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB LOGIN NOREPLICATION NOBYPASSRLS PASSWORD 'SCRAM-SHA-256$4096:abc=';
CREATE ROLE fidelity_reader;
ALTER ROLE fidelity_reader WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB NOLOGIN NOREPLICATION NOBYPASSRLS;
CREATE ROLE postgres;
ALTER ROLE postgres WITH SUPERUSER INHERIT CREATEROLE CREATEDB LOGIN REPLICATION BYPASSRLS;

--
-- User Configurations
--

ALTER ROLE fidelity_reader SET search_path TO 'audit';
ALTER ROLE fidelity_reader IN DATABASE app SET work_mem TO '64MB';
ALTER ROLE fidelity_reader IN DATABASE "gone db" SET work_mem TO '8MB';

--
-- Role memberships
--

GRANT fidelity_reader TO fidelity_app WITH INHERIT TRUE GRANTED BY postgres;
GRANT "App Owner; ""quoted""" TO postgres WITH ADMIN OPTION, INHERIT TRUE GRANTED BY "postgres";
GRANT fidelity_reader TO monitoring WITH INHERIT TRUE GRANTED BY postgres;

CREATE TABLESPACE fast OWNER postgres LOCATION '/mnt/fast';

\\unrestrict k32zrsNTNbi2BMIbthZn9WUT3SCQpwAxxPR9QOAqQVPMQImHD774UZL1gO9YpB9

--
-- PostgreSQL database cluster dump complete
--
'''


def test_statements_skip_meta_commands_comments_and_set_lines() -> None:
    found = list(statements(GLOBALS))
    assert not any(s.startswith(("\\", "SET", "--")) for s in found)
    assert found[0] == "CREATE ROLE authenticated;"
    # the semicolon inside the quoted name does not end the statement
    assert found[2] == 'CREATE ROLE "App Owner; ""quoted""";'


def test_statement_spanning_lines_inside_a_literal_is_one_statement() -> None:
    text = "COMMENT ON ROLE a IS 'line one;\nline two';\nCREATE ROLE b;\n"
    assert list(statements(text)) == ["COMMENT ON ROLE a IS 'line one;\nline two';", "CREATE ROLE b;"]


def test_an_unterminated_statement_is_unreadable() -> None:
    with pytest.raises(GlobalsUnreadable, match="inside a statement"):
        list(statements("CREATE ROLE 'a;\n"))


def test_parse_reads_roles_passwords_settings_memberships_and_tablespaces() -> None:
    cluster = parse_globals(GLOBALS)
    assert set(cluster.roles) == {
        "authenticated",
        'App Owner; "quoted"',
        "fidelity_app",
        "fidelity_reader",
        "postgres",
    }
    assert cluster.roles["fidelity_app"].has_password
    assert not cluster.roles["fidelity_reader"].has_password
    assert [database for database, _ in cluster.roles["fidelity_reader"].settings] == [None, "app", "gone db"]
    assert [(m.role, m.member) for m in cluster.memberships] == [
        ("fidelity_reader", "fidelity_app"),
        ('App Owner; "quoted"', "postgres"),
        ("fidelity_reader", "monitoring"),
    ]
    assert all("GRANTED BY" not in m.statement for m in cluster.memberships)
    assert cluster.memberships[1].statement.endswith("WITH ADMIN OPTION, INHERIT TRUE;")
    assert cluster.tablespaces == ["fast"]


def test_only_missing_needed_roles_are_created_and_existing_ones_never_touched() -> None:
    # Given the target has postgres and authenticated already
    creation = roles_to_create(
        parse_globals(GLOBALS),
        needed=["authenticated", "fidelity_app", "fidelity_reader", "postgres", 'App Owner; "quoted"'],
        existing=["postgres", "authenticated"],
        databases=["app", "postgres"],
    )
    # Then only the three missing roles are created, none statement names an existing role's
    # definition, and the passwordless ones are reported
    assert creation.created == ['App Owner; "quoted"', "fidelity_app", "fidelity_reader"]
    touched = {role for role, _ in creation.statements}
    assert touched <= set(creation.created) | {"postgres"}
    texts = [statement for _, statement in creation.statements]
    assert not any(
        t.startswith(("CREATE ROLE postgres", "ALTER ROLE postgres", "CREATE ROLE authenticated"))
        for t in texts
    )
    assert 'CREATE ROLE "App Owner; ""quoted""";' in texts
    assert any("PASSWORD 'SCRAM-SHA-256$4096:abc='" in t for t in texts)
    assert creation.without_password == ['App Owner; "quoted"', "fidelity_reader"]
    # settings: the general one and the one for a database that exists; not the other
    assert "ALTER ROLE fidelity_reader SET search_path TO 'audit';" in texts
    assert "ALTER ROLE fidelity_reader IN DATABASE app SET work_mem TO '64MB';" in texts
    assert creation.skipped_settings == [
        "ALTER ROLE fidelity_reader IN DATABASE \"gone db\" SET work_mem TO '8MB';"
    ]
    # memberships among roles that will exist; not to a member that exists nowhere
    assert "GRANT fidelity_reader TO fidelity_app WITH INHERIT TRUE;" in texts
    assert not any("monitoring" in t for t in texts)
    # roles are created before the memberships that name them
    assert texts.index("GRANT fidelity_reader TO fidelity_app WITH INHERIT TRUE;") > texts.index(
        "CREATE ROLE fidelity_reader;"
    )


def test_nothing_is_created_when_every_needed_role_exists() -> None:
    creation = roles_to_create(parse_globals(GLOBALS), needed=["postgres"], existing=["postgres"])
    assert creation.statements == [] and creation.created == []


def test_a_needed_role_missing_from_the_globals_is_reported() -> None:
    creation = roles_to_create(parse_globals(GLOBALS), needed=["ghost", "fidelity_reader"], existing=[])
    assert creation.not_in_globals == ["ghost"]
    assert creation.created == ["fidelity_reader"]
