"""The throwaway verify server's rules: version, extensions, scratch space, a full disk's words;
and the extensions a `pg_restore --list` creates."""

from __future__ import annotations

from drsentry.adapters.archive_head import listed_extensions
from drsentry.adapters.throwaway_server import restore_settings
from drsentry.core.config import VerifyConfig
from drsentry.jobs.verify.server_rules import (
    extensions_problem,
    ran_out_of_space,
    space_problem,
    version_problem,
)

MB = 1024 * 1024


def test_a_newer_or_equal_major_restores_an_older_dump() -> None:
    assert version_problem("16.4", "18.6") is None
    assert version_problem("18.1", "18.6") is None
    assert version_problem(None, "18.6") is None


def test_an_older_major_is_one_line_naming_both_versions_and_the_ways_out() -> None:
    problem = version_problem("17.2", "16.9")
    assert problem is not None and "\n" not in problem
    assert "PostgreSQL 17.2" in problem and "PostgreSQL 16.9" in problem
    assert "PostgreSQL 17 or newer" in problem and "verify.scratch_dsn" in problem


def test_missing_extensions_are_named_in_order_and_present_ones_pass() -> None:
    assert extensions_problem(["plpgsql", "vector"], {"plpgsql", "vector", "hstore"}, "18.6") is None
    problem = extensions_problem(["postgis", "vector", "pg_partman"], {"vector"}, "18.6")
    assert problem is not None
    assert problem.startswith("the backup needs extensions pg_partman, postgis, which the throwaway")
    assert "pgtools layer or image that has pg_partman, postgis" in problem


def test_space_check_counts_the_database_and_the_server_itself() -> None:
    assert space_problem(100 * MB, 96 * MB, 200 * MB) is None
    problem = space_problem(150 * MB, 96 * MB, 200 * MB)
    assert problem is not None
    assert "needs about 246 MB" in problem and "has 200 MB free" in problem
    assert "VerifyEphemeralStorageMB" in problem and "up to 10240 MB" in problem
    # A record from before database sizes were kept: the restore itself tells
    assert space_problem(None, 96 * MB, 1) is None


def test_the_servers_words_for_a_full_disk_are_recognised() -> None:
    assert ran_out_of_space(
        'pg_restore: error: could not execute query: ERROR:  could not extend file "base/16384/16390": '
        "No space left on device"
    )
    assert ran_out_of_space('PANIC:  could not write to file "pg_wal/xlogtemp.123": No space left on device')
    assert not ran_out_of_space('pg_restore exited with code 1: role "x" does not exist')
    assert not ran_out_of_space(None)


def test_listed_extensions_come_from_extension_entries_only() -> None:
    listing = (
        ";\n; Archive created at 2026-11-30\n;     dbname: app\n"
        "2; 3079 16385 EXTENSION - vector \n"
        ";\tdepends on: 1\n"
        "3; 0 0 COMMENT - EXTENSION vector \n"
        "4; 3079 16390 EXTENSION - drsentry_probe postgres\n"
        "229; 1259 16400 TABLE public extension_names app\n"
    )
    assert listed_extensions(listing) == ["drsentry_probe", "vector"]


def test_throwaway_settings_are_tuned_for_one_restore_and_sized_to_memory() -> None:
    small = restore_settings(memory_bytes=512 * MB)
    large = restore_settings(memory_bytes=64 * 1024 * MB)
    assert small["maintenance_work_mem"] == "128MB" and large["maintenance_work_mem"] == "2048MB"
    assert restore_settings(memory_bytes=128 * MB)["maintenance_work_mem"] == "64MB"
    assert {small[name] for name in ("fsync", "synchronous_commit", "full_page_writes", "autovacuum")} == {
        "off"
    }
    assert small["wal_level"] == "minimal" and small["max_wal_senders"] == "0"
    # verify restores in one transaction, which locks every relation it creates
    assert int(small["max_locks_per_transaction"]) >= 1024


def test_no_scratch_server_named_means_a_throwaway_one_and_both_are_refused() -> None:
    assert VerifyConfig().standing_scratch is False
    assert VerifyConfig(scratch_dsn="postgresql://x@h/db").standing_scratch is True
    try:
        VerifyConfig(scratch_dsn="postgresql://x@h/db", scratch_dsn_secret="drsentry/scratch")
    except ValueError as exc:
        assert "set at most one of scratch_dsn_secret or scratch_dsn" in str(exc)
    else:
        raise AssertionError("both scratch sources were accepted")
