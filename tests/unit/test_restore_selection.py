"""Choosing a partial restore's archive entries from `pg_restore -l --verbose` of the fidelity database."""
# ruff: noqa: E501

from __future__ import annotations

from pathlib import Path

from drsentry.operator.restore_selection import parse_listing, select_entries

LISTING = (Path(__file__).parent.parent / "fixtures" / "fidelity_toc.txt").read_text()
KNOWN = [
    ("Billing Data", "Invoice Lines"), ("audit", "events"), ("audit", "events_2026_01"),
    ("audit", "events_2026_02"), ("audit", "events_default"), ("public", "bookings"),
    ("public", "rooms"), ("public", "profiles"), ("public", "documents"), ("public", "cache_entries"),
]  # fmt: skip


def described(selection: object) -> list[str]:
    return [f"{e.description} {e.text}" for e in selection.entries]  # type: ignore[attr-defined]


def test_listing_is_read_with_descriptions_and_dependencies() -> None:
    entries = {e.dump_id: e for e in parse_listing(LISTING)}
    assert entries[226].description == "TABLE"
    assert entries[226].text == "Billing Data Invoice Lines fidelity_owner"
    assert entries[3138].description == "TABLE DATA"
    assert entries[2950].description == "TABLE ATTACH" and entries[2950].depends_on == [229, 228]


def test_a_partitioned_table_comes_with_every_partition_its_sequence_and_schema() -> None:
    # Given an empty target (only the public schema)
    selection = select_entries(
        parse_listing(LISTING),
        tables=[("audit", "events")],
        defined={("SCHEMA", "-", "public")},
        known_tables=KNOWN,
    )
    # Then the parent, all three partitions (the default one too), their data, the owned
    # sequence and its value, the default, the keys and attached indexes, the grants, and the
    # audit schema (missing on the target) with its grants and default privileges are restored
    assert selection.tables == [
        ("audit", "events"),
        ("audit", "events_2026_01"),
        ("audit", "events_2026_02"),
        ("audit", "events_default"),
    ]
    assert selection.partitions == [
        ("audit", "events_2026_01"),
        ("audit", "events_2026_02"),
        ("audit", "events_default"),
    ]
    found = described(selection)
    for expected in [
        "SCHEMA - audit fidelity_owner",
        "ACL - SCHEMA audit fidelity_owner",
        "SEQUENCE audit events_id_seq fidelity_owner",
        "SEQUENCE OWNED BY audit events_id_seq fidelity_owner",
        "SEQUENCE SET audit events_id_seq fidelity_owner",
        "DEFAULT audit events id fidelity_owner",
        "TABLE DATA audit events_default fidelity_owner",
        "TABLE ATTACH audit events_default fidelity_owner",
        "CONSTRAINT audit events events_pkey fidelity_owner",
        "INDEX ATTACH audit events_default_pkey fidelity_owner",
        "ACL audit TABLE events fidelity_owner",
        "DEFAULT ACL audit DEFAULT PRIVILEGES FOR TABLES fidelity_owner",
    ]:
        assert expected in found, expected
    # and nothing of other tables, nor large objects
    assert not any("bookings" in line or "BLOB" in line or "Invoice" in line for line in found)


def test_an_existing_schema_is_not_created_again() -> None:
    selection = select_entries(
        parse_listing(LISTING),
        tables=[("audit", "events")],
        defined={("SCHEMA", "-", "audit")},
        known_tables=KNOWN,
    )
    assert "SCHEMA - audit fidelity_owner" not in described(selection)
    assert "TABLE audit events fidelity_owner" in described(selection)


def test_a_table_brings_the_types_extensions_and_functions_the_target_lacks() -> None:
    selection = select_entries(
        parse_listing(LISTING),
        tables=[("Billing Data", "Invoice Lines")],
        defined={("SCHEMA", "-", "public"), ("EXTENSION", "-", "citext")},
        known_tables=KNOWN,
    )
    found = described(selection)
    for expected in [
        "SCHEMA - Billing Data fidelity_owner",
        "TYPE public mood postgres",
        "DOMAIN public positive_money postgres",
        "TYPE public postal_address postgres",
        "EXTENSION - hstore ",
        "FUNCTION public touch_note() fidelity_owner",
        "TRIGGER Billing Data Invoice Lines invoice_lines_touch fidelity_owner",
        "SEQUENCE Billing Data Invoice Lines_id_seq fidelity_owner",
    ]:
        assert expected in found, expected
    # citext is on the target already
    assert "EXTENSION - citext " not in found
    assert selection.tables == [("Billing Data", "Invoice Lines")]


def test_a_foreign_key_to_a_table_not_restored_is_left_out() -> None:
    selection = select_entries(
        parse_listing(LISTING),
        tables=[("public", "bookings")],
        defined={("SCHEMA", "-", "public")},
        known_tables=KNOWN,
    )
    found = described(selection)
    assert "CONSTRAINT public bookings bookings_pkey fidelity_owner" in found
    assert not any(line.startswith("FK CONSTRAINT") for line in found)
    both = select_entries(
        parse_listing(LISTING), tables=[("public", "bookings"), ("public", "rooms")], known_tables=KNOWN
    )
    assert "FK CONSTRAINT public bookings bookings_room_id_fkey fidelity_owner" in described(both)


def test_a_schema_restores_everything_in_it() -> None:
    selection = select_entries(
        parse_listing(LISTING),
        schemas=["Billing Data"],
        defined={("SCHEMA", "-", "public")},
        known_tables=KNOWN,
    )
    found = described(selection)
    assert "SCHEMA - Billing Data fidelity_owner" in found
    assert 'ACL - SCHEMA "Billing Data" fidelity_owner' in found
    assert "TABLE DATA Billing Data Invoice Lines fidelity_owner" in found
    assert 'ACL Billing Data TABLE "Invoice Lines" fidelity_owner' in found
    assert selection.tables == [("Billing Data", "Invoice Lines")]
    # the list file is the selected lines, in the archive's order
    assert selection.listing().splitlines()[0].startswith("9; 2615 17350 SCHEMA - Billing Data")
