"""Pure rules of verify: status derivation, drift, scratch naming, safety, the check plan."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from typing import Any

import pytest
import zstandard
from hypothesis import given
from hypothesis import strategies as st

from drsentry.adapters.pgmeta import RelationAcl, RlsTable
from drsentry.adapters.restore_stream import RestoreOutcome, _judge_pg_restore, _ZstdFrames
from drsentry.core.config import Assertion, VerifyConfig
from drsentry.core.records import (
    BackupRecord,
    Check,
    ClusterGlobals,
    VerificationRecord,
    derive_status,
    new_verification_id,
)
from drsentry.jobs.verify.rules import (
    CHECK_ARCHIVE,
    CHECK_DRIFT,
    CHECK_OBJECT,
    CHECK_RESTORE,
    CHECK_ROLES,
    CHECK_RTO,
    CheckList,
    Expected,
    RolesRestored,
    VerificationRefused,
    acl_differences,
    assertion_names,
    backup_time,
    check_plan,
    choose_backups,
    evaluate_assertion,
    expected_contents,
    judge_roles,
    judge_stream,
    missing_functions,
    refuse_unsafe_scratch,
    rls_problems,
    row_count_drift,
    row_count_mismatches,
    scratch_database_name,
)


def check(status: str, severity: str = "critical", name: str = "c") -> Check:
    return Check.model_validate({"name": name, "severity": severity, "status": status, "detail": ""})


# status ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("checks", "status"),
    [
        ([check("passed"), check("passed", "warning")], "success"),
        ([check("passed"), check("skipped", "warning")], "success"),
        ([check("passed"), check("failed", "warning")], "warning"),
        ([check("failed"), check("passed", "warning")], "failure"),
        ([check("failed"), check("failed", "warning")], "failure"),
        ([], "failure"),
    ],
)
def test_status_from_checks(checks: list[Check], status: str) -> None:
    assert derive_status(checks) == status


@given(
    st.lists(
        st.tuples(st.sampled_from(["passed", "failed", "skipped"]), st.sampled_from(["critical", "warning"])),
        min_size=1,
    )
)
def test_any_failed_critical_check_is_a_failure(entries: list[tuple[str, str]]) -> None:
    checks = [check(status, severity) for status, severity in entries]
    critical_failed = ("failed", "critical") in entries
    warning_failed = ("failed", "warning") in entries
    expected = "failure" if critical_failed else "warning" if warning_failed else "success"
    assert derive_status(checks) == expected


def test_check_list_marks_what_never_ran_as_skipped_in_plan_order() -> None:
    plan = check_plan(VerifyConfig(scratch_dsn="host=x"))
    checks = CheckList(plan)
    checks.failed(CHECK_OBJECT, "sha256 differs")

    result = checks.finish("the restore did not complete")

    assert [c.name for c in result] == [name for name, _ in plan]
    assert result[0].status == "failed"
    assert all(c.status == "skipped" and "the restore did not complete" in c.detail for c in result[1:])


def test_plan_lists_the_thirteen_checks_with_assertions_before_restore_time() -> None:
    verify = VerifyConfig(
        scratch_dsn="host=x",
        assertions=[
            Assertion(name="recent rows", sql="select true", severity="warning"),
            Assertion(name="recent rows", sql="select true"),
        ],
    )
    plan = check_plan(verify)
    names = [name for name, _ in plan]
    assert names[-3:] == ["assertion: recent rows", "assertion: recent rows (2)", CHECK_RTO]
    assert dict(plan)["assertion: recent rows"] == "warning"
    assert dict(plan)["assertion: recent rows (2)"] == "critical"
    assert dict(plan)[CHECK_DRIFT] == "warning"
    assert dict(plan)["functions"] == "warning"
    assert dict(plan)["database size"] == "warning"
    assert len(names) == len(set(names))
    assert len(check_plan(VerifyConfig(scratch_dsn="host=x"))) == 13
    assert names[names.index("schema fingerprint") + 1] == CHECK_ROLES
    assert dict(plan)[CHECK_ROLES] == "critical"


def test_duplicate_assertion_names_are_made_unique() -> None:
    names = [name for name, _ in assertion_names([Assertion(name="a", sql="x")] * 3)]
    assert names == ["assertion: a", "assertion: a (2)", "assertion: a (3)"]


# row counts and drift ---------------------------------------------------------------------


def test_row_count_mismatches_name_each_table() -> None:
    problems = row_count_mismatches({"a": 10, "b": 5, "gone": 1}, {"a": 10, "b": 4, "extra": 2})
    assert problems == [
        "gone: missing (manifest has 1 rows)",
        "b: 4 rows, manifest has 5",
        "extra: not in the manifest (2 rows)",
    ]


def test_equal_counts_have_no_mismatch() -> None:
    assert row_count_mismatches({"a": 1, "audit.events": 0}, {"a": 1, "audit.events": 0}) == []


@pytest.mark.parametrize(
    ("before", "after", "drifted"),
    [
        (1000, 1100, False),  # exactly +10%: within tolerance
        (1000, 900, False),  # exactly -10%
        (1000, 1101, True),
        (1000, 899, True),
        (0, 0, False),
        (0, 3, True),
    ],
)
def test_drift_is_relative_to_the_previous_count(before: int, after: int, drifted: bool) -> None:
    assert bool(row_count_drift({"t": before}, {"t": after}, 0.10)) is drifted


def test_drift_reports_a_vanished_table_and_ignores_a_new_one() -> None:
    drifted = row_count_drift({"a": 100, "b": 50}, {"b": 50, "new": 10}, 0.10)
    assert drifted == ["a: 100 -> 0 rows (-100.0%) (table gone)"]


def test_drift_message_gives_the_change() -> None:
    assert row_count_drift({"appointments": 6000}, {"appointments": 4000}, 0.10) == [
        "appointments: 6,000 -> 4,000 rows (-33.3%)"
    ]


# functions and RLS ------------------------------------------------------------------------


def test_functions_match_by_name_or_full_signature() -> None:
    present = ["book(p bigint)", "audit.log(text)"]
    assert missing_functions(["book", "audit.log", "book(p bigint)"], present) == []
    assert missing_functions(["book(p integer)", "nope"], present) == ["book(p integer)", "nope"]


def test_rls_requires_enabled_and_a_policy() -> None:
    tables = [
        RlsTable("ok", True, False, ("p",)),
        RlsTable("no_policy", True, False, ()),
        RlsTable("disabled", False, False, ("p",)),
    ]
    existing = {"ok", "no_policy", "disabled", "plain"}
    problems = rls_problems(["ok", "no_policy", "disabled", "plain", "missing"], tables, existing)
    assert problems == [
        "no_policy: RLS enabled but no policy (every row is hidden)",
        "disabled: row-level security is disabled",
        "plain: row-level security is disabled",
        "missing: table missing",
    ]


# assertions --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rows", "why_not"),
    [
        ([(True,)], None),
        ([(False,)], "returned false"),
        ([(None,)], "returned NULL"),
        ([], "returned no rows (expected one boolean)"),
        ([(1,)], "returned 1 (expected a boolean)"),
        ([(True, 1)], "returned 1 row(s) of 2 column(s) (expected one boolean)"),
        ([(True,), (True,)], "returned 2 row(s) of 1 column(s) (expected one boolean)"),
    ],
)
def test_an_assertion_must_return_one_true_boolean(rows: list[tuple[Any, ...]], why_not: str | None) -> None:
    assert evaluate_assertion(rows) == why_not


# scratch database --------------------------------------------------------------------------


def test_scratch_database_name_is_lower_case_with_underscores() -> None:
    assert (
        scratch_database_name("20261122T180000123Z-1a2b3c4d")
        == "drsentry_verify_20261122t180000123z_1a2b3c4d"
    )
    assert scratch_database_name("20261122T180000Z-1a2b3c4d") == "drsentry_verify_20261122t180000z_1a2b3c4d"


def test_scratch_database_name_never_exceeds_postgres_limit() -> None:
    with pytest.raises(ValueError, match="63"):
        scratch_database_name("x" * 60)


SOURCE = "postgresql://app:pw-s3cr3t@db.example.com:5432/app"


@pytest.mark.parametrize(
    "scratch",
    [
        "postgresql://admin:pw-0ther@db.example.com:5432/app",  # same server and database, other user
        "host=DB.example.com port=5432 dbname=app user=x",
    ],
)
def test_scratch_that_is_the_source_database_is_refused(scratch: str) -> None:
    with pytest.raises(VerificationRefused, match="is the source database") as raised:
        refuse_unsafe_scratch(SOURCE, scratch, "drsentry_verify_x", "app")
    assert "pw-s3cr3t" not in str(raised.value) and "pw-0ther" not in str(raised.value)


def test_source_named_like_a_scratch_database_on_the_scratch_server_is_refused() -> None:
    source = "postgresql://app:secret@localhost:5432/drsentry_verify_prod"
    with pytest.raises(VerificationRefused, match="named like"):
        refuse_unsafe_scratch(
            source, "postgresql://admin:x@127.0.0.1:5432/postgres", "drsentry_verify_1", "app"
        )


@pytest.mark.parametrize(
    "scratch",
    [
        "postgresql://admin:x@db.example.com:5432/postgres",  # same server, maintenance database
        "postgresql://admin:x@scratch.example.com:5432/app",  # other server, same database name
        "postgresql://admin:x@db.example.com:5433/app",  # other port
    ],
)
def test_a_separate_scratch_database_is_allowed(scratch: str) -> None:
    refuse_unsafe_scratch(SOURCE, scratch, "drsentry_verify_20261122t180000z_1a2b3c4d", "app")


# which backups ---------------------------------------------------------------------------


def backup(backup_id: str) -> BackupRecord:
    return BackupRecord(
        target="app",
        backup_id=backup_id,
        status="completed",
        started_at="2026-11-22T18:00:00Z",
        bucket="b",
        key=f"{backup_id}.dump",
        manifest_key=f"{backup_id}.manifest.json",
    )


def test_newest_first_then_distinct_random_older_ones() -> None:
    completed = [backup(f"2026112{day}T000000000Z-0000000{day}") for day in range(9, 0, -1)]
    chosen = choose_backups(completed, 3, random.Random(7))
    assert chosen[0] is completed[0]
    assert len({b.backup_id for b in chosen}) == 4
    assert all(b in completed[1:] for b in chosen[1:])
    assert [b.backup_id for b in chosen[1:]] == sorted((b.backup_id for b in chosen[1:]), reverse=True)


def test_sampling_more_than_exist_takes_them_all() -> None:
    completed = [backup("20261122T000000000Z-00000002"), backup("20261121T000000000Z-00000001")]
    assert choose_backups(completed, 5) == completed
    assert choose_backups([], 2) == []


def test_backup_time_comes_from_the_id() -> None:
    assert backup_time("20261122T180512345Z-1a2b3c4d") == datetime(2026, 11, 22, 18, 5, 12, tzinfo=UTC)


# records ---------------------------------------------------------------------------------


def test_verification_ids_sort_by_time() -> None:
    ids = [new_verification_id() for _ in range(50)]
    assert [i[:12] for i in ids] == sorted(i[:12] for i in ids)
    assert len(set(ids)) == 50


def test_record_has_exactly_the_contract_fields() -> None:
    record = VerificationRecord(
        target="app", backup_id="b", verified_at="2026-11-22T18:00:00Z", status="success"
    )
    assert set(record.model_dump()) == {
        "id",
        "target",
        "backup_id",
        "verified_at",
        "backup_age_hours",
        "backup_size_mb",
        "status",
        "checks_passed",
        "checks_failed",
        "restore_seconds",
        "checks",
        "error_details",
        # Where it ran and why (lambda | fargate), and the run that wrote it (the Fargate failure
        # step looks a run's record up by it).
        "runner",
        "run_id",
        "server",
        # The time split's third part, beside restore_seconds and server.start_seconds.
        "checks_seconds",
    }


# zstd framing ------------------------------------------------------------------------------


def test_zstd_decoder_knows_a_truncated_stream_from_a_whole_one() -> None:
    payload = bytes(range(256)) * 4096
    compressed = zstandard.ZstdCompressor(level=3).compress(payload)

    whole = _ZstdFrames()
    assert whole.decompress(compressed) == payload
    assert whole.complete and whole.frames == 1

    cut = _ZstdFrames()
    cut.decompress(compressed[: len(compressed) // 2])
    assert not cut.complete


def test_zstd_decoder_reads_several_frames() -> None:
    first, second = b"a" * 1000, b"b" * 1000
    compressor = zstandard.ZstdCompressor()
    stream = compressor.compress(first) + compressor.compress(second)
    decoder = _ZstdFrames()
    output = b"".join(decoder.decompress(stream[i : i + 7]) for i in range(0, len(stream), 7))
    assert output == first + second
    assert decoder.complete and decoder.frames == 2


# pg_restore's verdict ------------------------------------------------------------------------


def test_pg_restore_archive_complaint_marks_the_archive_unreadable() -> None:
    outcome = RestoreOutcome(
        bucket="b",
        key="k",
        pg_restore_exit=1,
        pg_restore_stderr=("pg_restore: error: could not read from input file: end of file"),
    )
    _judge_pg_restore(outcome)
    assert outcome.archive_error and "end of file" in outcome.archive_error
    assert (
        outcome.restore_error
        == "pg_restore exited with code 1: pg_restore: error: could not read from input file: end of file"
    )
    assert not outcome.restored


def test_pg_restore_sql_error_is_a_restore_failure_only() -> None:
    outcome = RestoreOutcome(
        bucket="b",
        key="k",
        pg_restore_exit=1,
        pg_restore_stderr=(
            'pg_restore: error: could not execute query: ERROR:  extension "postgis" is not available'
        ),
    )
    _judge_pg_restore(outcome)
    assert outcome.archive_error is None
    assert outcome.restore_error and "postgis" in outcome.restore_error


def test_pg_restore_killed_by_a_signal_says_so() -> None:
    outcome = RestoreOutcome(bucket="b", key="k", pg_restore_exit=-9)
    _judge_pg_restore(outcome)
    assert outcome.restore_error == "pg_restore was killed by signal 9"


def test_clean_exit_with_warnings_is_restored() -> None:
    outcome = RestoreOutcome(
        bucket="b",
        key="k",
        pg_restore_exit=0,
        pg_restore_stderr="pg_restore: warning: errors ignored on restore: 0",
    )
    _judge_pg_restore(outcome)
    assert outcome.restored and outcome.warnings == ["pg_restore: warning: errors ignored on restore: 0"]


# judging one pass over the object ------------------------------------------------------------


def judged(record: BackupRecord, outcome: RestoreOutcome) -> dict[str, Check]:
    checks = CheckList(check_plan(VerifyConfig(scratch_dsn="host=x")))
    judge_stream(checks, record, outcome, "drsentry_verify_x", lambda text: text.replace("pw", "***"))
    return {c.name: c for c in checks.finish("stopped")}


def test_a_truncated_object_fails_the_checksum_and_the_archive_not_a_missing_restore() -> None:
    # Given a catalog record and a pass that read fewer, different bytes and an unfinished frame
    record = backup("20261122T180000Z-1a2b3c4d").model_copy(update={"size_bytes": 2048, "sha256": "aa"})
    outcome = RestoreOutcome(
        bucket="b", key="k", size_bytes=1024, sha256="bb", archive_error="zstd: truncated (pw)"
    )

    # When it is judged
    checks = judged(record, outcome)

    # Then the checksum names both differences, the archive the cleaned cause, and the restore failed
    assert checks[CHECK_OBJECT].status == "failed"
    assert checks[CHECK_OBJECT].detail == (
        f"s3://b/{record.key}: size 1,024 bytes, catalog says 2,048; "
        "sha256 bb does not match the catalog's aa"
    )
    assert (checks[CHECK_ARCHIVE].status, checks[CHECK_ARCHIVE].detail) == ("failed", "zstd: truncated (***)")
    assert (checks[CHECK_RESTORE].status, checks[CHECK_RESTORE].detail) == (
        "failed",
        "pg_restore did not finish",
    )


def test_a_record_without_sha256_never_passes_the_checksum() -> None:
    record = backup("20261122T180000Z-1a2b3c4d")
    outcome = RestoreOutcome(bucket="b", key="k", size_bytes=10, sha256="bb", frames=1, pg_restore_exit=0)

    checks = judged(record, outcome)

    assert checks[CHECK_OBJECT].status == "failed"
    assert checks[CHECK_OBJECT].detail.endswith("the catalog record has no sha256 to compare with")
    assert checks[CHECK_RESTORE].status == "passed"
    assert checks[CHECK_RESTORE].detail.startswith("restored into drsentry_verify_x in ")


def test_expected_contents_prefer_the_manifest_and_fall_back_to_the_catalog_record() -> None:
    record = backup("20261122T180000Z-1a2b3c4d").model_copy(
        update={"tables": {"a": 1}, "schema_fingerprint": "sha256:catalog"}
    )

    from_manifest = expected_contents(record, {"tables": {"a": "2"}})
    unreadable = expected_contents(record, None)

    assert (from_manifest.tables, from_manifest.schema_fingerprint, from_manifest.source) == (
        {"a": 2},
        "sha256:catalog",
        "manifest",
    )
    assert (unreadable.tables, unreadable.schema_fingerprint, unreadable.source) == (
        {"a": 1},
        "sha256:catalog",
        "catalog record",
    )


def test_expected_contents_read_the_manifests_owners_and_grants() -> None:
    record = backup("20261122T180000Z-1a2b3c4d")
    manifest = {
        "tables": {},
        "acl": {"billing.invoices": {"owner": "app", "grants": ["app=arwd", "reader=r"]}},
    }

    expected = expected_contents(record, manifest)

    assert expected.acl == {"billing.invoices": RelationAcl("app", ("app=arwd", "reader=r"))}
    assert expected_contents(record, {"tables": {}}).acl is None
    assert expected_contents(record, None).acl is None


# roles and grants ----------------------------------------------------------------------------

MANIFEST_ACL = {
    "billing.invoices": RelationAcl("app_owner", ("app_owner=arwdDxtm", "app_reader=r")),
    "billing.invoices.amount": RelationAcl("app_owner", ("app_reader=w",)),
    "billing.invoices_id_seq": RelationAcl("app_owner", ("app_owner=rwU",)),
}


def test_equal_owners_and_grants_have_no_difference() -> None:
    assert acl_differences(MANIFEST_ACL, dict(MANIFEST_ACL)) == []


def test_a_grant_changed_after_capture_is_named_with_both_sides() -> None:
    # Given a restored table whose reader may also insert, which the manifest does not say
    restored = dict(MANIFEST_ACL)
    restored["billing.invoices"] = RelationAcl("app_owner", ("app_owner=arwdDxtm", "app_reader=ar"))

    # Then the difference names the table, what was restored and what the manifest has
    assert acl_differences(MANIFEST_ACL, restored) == [
        "billing.invoices: grants app_owner=arwdDxtm app_reader=ar, "
        "manifest has app_owner=arwdDxtm app_reader=r"
    ]


def test_another_owner_a_lost_grant_a_missing_and_an_extra_relation_are_each_named() -> None:
    restored = {
        "billing.invoices": RelationAcl("postgres", ("app_owner=arwdDxtm", "app_reader=r")),
        "billing.invoices.amount": RelationAcl("app_owner", ()),
        "billing.notes": RelationAcl("postgres", ()),
    }

    assert acl_differences(MANIFEST_ACL, restored) == [
        "billing.invoices: owner postgres, manifest has app_owner",
        "billing.invoices.amount: grants (none), manifest has app_reader=w",
        "billing.invoices_id_seq: missing (manifest: owner app_owner)",
        "billing.notes: not in the manifest (owner postgres)",
    ]


def with_roles(*roles: str) -> BackupRecord:
    globals_ = ClusterGlobals(
        key="k.globals.sql", sha256="aa", size_bytes=1, role_passwords=True, roles=list(roles)
    )
    return backup("20261122T180000Z-1a2b3c4d").model_copy(update={"globals": globals_})


def judged_roles(
    record: BackupRecord,
    roles: RolesRestored,
    present: set[str],
    restored_acl: dict[str, RelationAcl],
    acl: dict[str, RelationAcl] | None = MANIFEST_ACL,
) -> Check:
    checks = CheckList(check_plan(VerifyConfig(scratch_dsn="host=x")))
    expected = Expected({}, None, "manifest", acl)
    judge_roles(checks, record, roles, present=present, expected=expected, restored_acl=restored_acl)
    return {c.name: c for c in checks.finish("stopped")}[CHECK_ROLES]


def test_roles_present_and_grants_equal_pass_saying_which_roles_were_created() -> None:
    record = with_roles("app_owner", "app_reader")

    result = judged_roles(
        record, RolesRestored(created=["app_reader"]), {"postgres", "app_owner", "app_reader"}, MANIFEST_ACL
    )

    assert result.status == "passed"
    assert result.detail == (
        "2 role(s) the database references present (app_reader created on the scratch server from the "
        "roles object (they stay there: roles belong to the whole server, not to the scratch database)); "
        "owners and grants of 3 relation(s) equal the manifest's"
    )


def test_a_role_missing_after_the_restore_or_from_the_roles_object_fails_naming_it() -> None:
    record = with_roles("app_owner", "app_reader", "app_policy")

    result = judged_roles(
        record, RolesRestored(not_in_globals=["app_policy"]), {"app_owner", "app_reader"}, MANIFEST_ACL
    )

    assert result.status == "failed"
    assert result.detail == (
        "roles app_policy are referenced by the database but not in the backup's roles object: a blank "
        "server could not restore this backup; roles missing after the restore: app_policy"
    )


def test_a_grant_difference_fails_the_check() -> None:
    restored = dict(MANIFEST_ACL)
    restored["billing.invoices_id_seq"] = RelationAcl("app_owner", ("app_owner=rwU", "app_reader=r"))

    result = judged_roles(
        with_roles("app_owner", "app_reader"), RolesRestored(), {"app_owner", "app_reader"}, restored
    )

    assert result.status == "failed"
    assert result.detail.startswith(
        "owners and grants differ from the manifest's: billing.invoices_id_seq: grants"
    )


def test_a_backup_without_a_roles_object_skips_the_check_with_the_reason() -> None:
    result = judged_roles(backup("20261122T180000Z-1a2b3c4d"), RolesRestored(), set(), {})

    assert result.status == "skipped"
    assert result.detail.startswith("the backup predates roles objects")


def test_a_manifest_without_owners_and_grants_still_checks_the_roles() -> None:
    result = judged_roles(with_roles("app_owner"), RolesRestored(), {"app_owner"}, {}, acl=None)

    assert result.status == "passed"
    assert result.detail.endswith("the manifest holds no owners and grants to compare")
