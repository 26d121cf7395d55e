"""Masking rules: the file format and what a template writes (no database)."""

from __future__ import annotations

from pathlib import Path

import pytest

from drsentry.core.errors import BadInput
from drsentry.operator.masking import (
    ColumnRule,
    TableRule,
    load_rules,
    parse_rules,
    render,
    split_table,
    template_parts,
)

SEED_RULES = """
tables:
  profiles:
    columns:
      email: email
      phone: phone
      full_name: name
      notes: null
      nickname: "user {id}"
  sessions: truncate
  audit.api_keys:
    key: key_id
    columns: {secret: "null"}
"""


def test_the_seeds_rules_parse_into_templates_nulls_and_truncates() -> None:
    rules = parse_rules(SEED_RULES)

    profiles, sessions, api_keys = rules.tables
    assert profiles == TableRule(
        "profiles",
        columns=(
            ColumnRule("email", "template", "test-{id}@example.com"),
            ColumnRule("phone", "template", "+1000000{id}"),
            ColumnRule("full_name", "template", "Test Customer {id}"),
            ColumnRule("notes", "null"),
            ColumnRule("nickname", "template", "user {id}"),
        ),
    )
    assert sessions == TableRule("sessions", truncate=True)
    assert api_keys == TableRule("audit.api_keys", key="key_id", columns=(ColumnRule("secret", "null"),))


@pytest.mark.parametrize(
    ("template", "key", "expected"),
    [
        ("test-{id}@example.com", 42, "test-42@example.com"),
        ("+1000000{id}", 7, "+10000007"),
        ("Test Customer {id}", 1999, "Test Customer 1999"),
        ("{id}", 3, "3"),
        ("{id}-{id}", 5, "5-5"),
        ("redacted", 9, "redacted"),
    ],
)
def test_a_template_writes_the_key_where_id_stands(template: str, key: int, expected: str) -> None:
    assert render(template, key) == expected


def test_template_parts_keep_literal_text_apart_from_the_key() -> None:
    assert template_parts("test-{id}@example.com") == ["test-", None, "@example.com"]
    assert template_parts("{id}") == [None]
    # text that looks like SQL stays literal text: it is sent as a bound literal, never spliced
    assert template_parts("'); drop table x; --{id}") == ["'); drop table x; --", None]


def test_tables_are_named_as_pgmeta_names_them() -> None:
    assert split_table("profiles") == ("public", "profiles")
    assert split_table("audit.events") == ("audit", "events")


def test_rules_for_tables_a_partial_restore_does_not_bring_back_are_skipped() -> None:
    rules = parse_rules(SEED_RULES)
    kept, skipped = rules.for_tables({"profiles"})
    assert [rule.table for rule in kept.tables] == ["profiles"]
    assert skipped == ["sessions", "audit.api_keys"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "tables: {profiles: {columns: {email: '{email}'}}}",
            "tables.profiles.columns.email: unknown placeholder {email}",
        ),
        (
            "tables: {profiles: {columns: {email: 3}}}",
            "tables.profiles.columns.email: expected email, phone, name",
        ),
        ("tables: {profiles: {colums: {email: email}}}", "tables.profiles.colums: unknown field"),
        ("tables: {profiles: drop}", "tables.profiles: expected `truncate` or a mapping"),
        ("tables: {profiles: {key: id}}", "tables.profiles: no columns to mask and not truncated"),
        ("tables: {profiles: {key: id, columns: {id: email}}}", "tables.profiles.columns.id: the key column"),
        (
            "tables: {profiles: {truncate: true, columns: {email: email}}}",
            "a truncated table has no rows left",
        ),
        ("tables: {a.b.c: truncate}", "tables.a.b.c: write a table as name or schema.name"),
        ("profiles: truncate", "expected one mapping `tables:`"),
        ("tables: {}", "tables: no rules"),
        ("tables: [", "malformed YAML at line 1"),
    ],
)
def test_a_bad_rules_file_is_one_line_naming_the_field(text: str, message: str) -> None:
    with pytest.raises(BadInput) as raised:
        parse_rules(text, "mask.yaml")
    assert str(raised.value).startswith("mask.yaml: ")
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)


def test_a_missing_rules_file_is_bad_input(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="cannot read mask rules"):
        load_rules(tmp_path / "nope.yaml")


# checked before the restore ----------------------------------------------------------


def test_public_tables_are_named_without_their_schema_as_in_the_manifest() -> None:
    rules = parse_rules("tables: {public.profiles: {columns: {email: email}}, audit.api_keys: truncate}")

    assert [rule.table for rule in rules.tables] == ["profiles", "audit.api_keys"]


def test_two_rules_for_one_table_are_bad_input() -> None:
    with pytest.raises(BadInput, match=r"tables\.public\.profiles: a second rule for profiles"):
        parse_rules("tables: {profiles: truncate, public.profiles: {columns: {email: email}}}", "mask.yaml")


BACKUP_TABLES = {"organizations": 50, "profiles": 2000, "sessions": 900, "audit.api_keys": 3}
BACKUP_COLUMNS = {
    "profiles": {
        "id": "bigint",
        "email": "text",
        "phone": "character varying(40)",
        "full_name": "public.citext",
        "tags": "character varying(20)[]",
        "organization_id": "bigint",
    },
    "audit.api_keys": {"key_id": "uuid", "secret": "text"},
}


def test_rules_that_fit_the_backup_pass() -> None:
    rules = parse_rules(
        "tables:\n"
        "  profiles: {columns: {email: email, phone: phone, full_name: name, tags: null}}\n"
        "  sessions: truncate\n"
        "  audit.api_keys: {key: key_id, columns: {secret: null}}\n"
    )

    rules.check_tables(BACKUP_TABLES, "app-20261130T120000Z")
    rules.check_columns(BACKUP_COLUMNS, "app-20261130T120000Z")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "tables: {profles: {columns: {email: email}}}",
            "mask.yaml: tables.profles: backup app-1 has no table profles (did you mean profiles?)",
        ),
        (
            "tables: {billing.invoices: truncate}",
            "mask.yaml: tables.billing.invoices: backup app-1 has no table billing.invoices "
            "(it has: audit.api_keys, organizations, profiles, sessions)",
        ),
    ],
)
def test_a_rule_for_a_table_the_backup_lacks_is_one_line_naming_it(text: str, message: str) -> None:
    with pytest.raises(BadInput) as raised:
        parse_rules(text, "mask.yaml").check_tables(BACKUP_TABLES, "app-1")

    assert str(raised.value) == message


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "tables: {profiles: {columns: {emial: email}}}",
            "mask.yaml: tables.profiles.columns.emial: profiles in backup app-1 has no column emial "
            "(did you mean email?)",
        ),
        (
            "tables: {audit.api_keys: {key: keyid, columns: {secret: null}}}",
            "mask.yaml: tables.audit.api_keys.key: audit.api_keys in backup app-1 has no column keyid "
            "(did you mean key_id?)",
        ),
        (
            "tables: {profiles: {columns: {organization_id: name}}}",
            "mask.yaml: tables.profiles.columns.organization_id: a template writes text, the column is "
            "bigint; use null instead",
        ),
        (
            "tables: {profiles: {columns: {tags: 'tag {id}'}}}",
            "mask.yaml: tables.profiles.columns.tags: a template writes text, the column is "
            "character varying(20)[]; use null instead",
        ),
    ],
)
def test_a_rule_that_does_not_fit_the_backups_columns_is_one_line_naming_it(text: str, message: str) -> None:
    with pytest.raises(BadInput) as raised:
        parse_rules(text, "mask.yaml").check_columns(BACKUP_COLUMNS, "app-1")

    assert str(raised.value) == message


def test_tables_whose_columns_are_unknown_are_left_to_the_check_after_the_restore() -> None:
    rules = parse_rules("tables: {organizations: {columns: {nmae: name}}}")

    rules.check_columns(BACKUP_COLUMNS, "app-1")  # organizations is not in BACKUP_COLUMNS: no verdict
