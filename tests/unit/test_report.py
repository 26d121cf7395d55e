"""The drill report and its rules (no database, no AWS): numbers a script can read back."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from drsentry.core.records import Check
from drsentry.operator.drill import (
    NEAR_OBJECTIVE,
    SIZE_DRIFT,
    DrillReport,
    HistoryPoint,
    RunContext,
    drill_recommendations,
    drill_status,
)
from drsentry.operator.drill_report import (
    axis_top,
    card_states,
    format_seconds,
    nice_step,
    render_html,
    render_markdown,
    svg_chart,
    text_bar,
    time_labels,
    write_report,
)
from drsentry.operator.smoke import SmokeResult
from drsentry.operator.status import rpo_level


def report(**changes: object) -> DrillReport:
    base = DrillReport(
        target="app",
        status="PASS",
        started_at="2026-11-22T03:00:00Z",
        finished_at="2026-11-22T03:04:12Z",
        total_seconds=252.4,
        backup_id="20261122T030000042Z-1a2b3c4d",
        backup_status="completed",
        backup_seconds=118.3,
        backup_size_bytes=512_334_112,
        verification_id="0193a1b2c3d4e5f6",
        verification_status="success",
        restore_seconds=84.2,
        checks_passed=11,
        checks_total=12,
        checks_skipped=1,
        checks=[Check(name="restore", severity="critical", status="passed", detail="restored <fast> & well")],
        issues=["warning check failed: row count drift: a | b"],
        rto_target_seconds=900,
        rto_measured_seconds=84.2,
        rto_met=True,
        rpo_target_seconds=3600,
        rpo_measured_seconds=2412,
        rpo_met=True,
        rpo_basis="the newest backup before the drill (20261122T020000013Z-55ee01aa)",
        history=[
            HistoryPoint(
                verified_at=f"2026-11-{day:02d}T03:00:00Z",
                backup_id=f"202611{day:02d}T030000000Z-1a2b3c4d",
                status="failure" if day == 3 else "success",
                restore_seconds=None if day == 3 else 60.0 + day,
                backup_size_mb=400.0 + day,
            )
            for day in range(1, 6)
        ],
        next_drill_by="2027-02-21",
        context=RunContext(
            source="db.internal:5432/app",
            drsentry_version="0.1.0",
            ran_by="alice on ops-1",
            config_digest="sha256:" + "ab" * 32 + " of drsentry.yaml",
        ),
    )
    return base.model_copy(update=changes)


def smoke(name: str, status: str = "passed", detail: str = "answered 200 in 0.01 s") -> SmokeResult:
    return SmokeResult(
        name=name, kind="http", target="http://app/health", status=status, seconds=0.01, max_seconds=2,
        detail=detail,
    )  # fmt: skip


def html_field(html: str, name: str) -> str:
    match = re.search(rf'data-field="{name}"[^>]*>([^<]*)<', html)
    assert match, name
    return match.group(1)


def card_class(html: str, card: str) -> set[str]:
    match = re.search(rf'<div class="([^"]*)" data-card="{card}">', html)
    assert match, card
    return set(match.group(1).split())


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(None, "-"), (0.84, "0.8 s"), (84.2, "84.2 s"), (252.4, "4 min 12 s"), (900, "15 min"), (3600, "1 h"),
     (7500, "2 h 5 min")],
)  # fmt: skip
def test_durations_read_at_a_glance(seconds: float | None, text: str) -> None:
    assert format_seconds(seconds) == text


@pytest.mark.parametrize(
    ("backup", "verification", "rto_met", "rpo_met", "status"),
    [
        ("completed", "success", True, True, "PASS"),
        ("completed", "warning", True, None, "PASS"),
        ("completed", "failure", True, True, "FAIL"),
        ("failed", None, None, True, "FAIL"),
        ("completed", "success", False, True, "FAIL"),
        ("completed", "success", True, False, "FAIL"),
    ],
)
def test_a_drill_passes_only_when_everything_held(
    backup: str, verification: str | None, rto_met: bool | None, rpo_met: bool | None, status: str
) -> None:
    assert drill_status(backup, verification, rto_met, rpo_met) == status


def test_markdown_report_carries_the_seeds_fields_in_readable_form() -> None:
    text = render_markdown(report())

    assert re.search(r"\| Drill status \| \*\*PASS\*\* \|", text)
    assert "| Total duration | 4 min 12 s |" in text
    assert "| Issues encountered | 1 |" in text
    assert "| Backup duration | 118.3 s | | completed |" in text
    assert "| Restore duration | 84.2 s | | |" in text
    assert "| Checks passed | 11/12 | | success |" in text
    assert "| RTO | 84.2 s | 15 min | met |" in text
    assert "| RPO | 40 min 12 s | 1 h | met |" in text
    assert "- warning check failed: row count drift: a \\| b" in text  # a pipe cannot break the table
    assert "## Last 5 verifications (oldest first)" in text
    # the chart is a table with text bars; the failed verification has no restore time
    assert (
        "| 2026-11-03T03:00:00Z | `20261103T030000000Z-1a2b3c4d` | failure | - | `················` |" in text
    )
    # restore bars are scaled to the RTO (65 s of 15 min is one block), size bars to the largest backup
    assert "| 65.0 s | `█░░░░░░░░░░░░░░░` | 405.0 MB | `████████████████` |" in text


def test_html_report_marks_the_fields_and_escapes_text() -> None:
    html = render_html(report(status="FAIL", rto_met=False, rto_measured_seconds=1250.0))

    def field(name: str) -> str:
        match = re.search(rf'data-field="{name}"[^>]*>([^<]*)<', html)
        assert match, name
        return match.group(1)

    assert field("status") == "FAIL"
    assert field("checks") == "11/12"
    assert field("total-duration") == "4 min 12 s"
    assert field("backup-duration") == "118.3 s"
    assert field("restore-duration") == "84.2 s"
    assert field("rto-measured") == "20 min 50 s"
    assert field("rto-target") == "15 min"
    assert field("issues") == "1"
    assert "restored &lt;fast&gt; &amp; well" in html
    assert html.count("<svg") == 2
    assert "<script" not in html and "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")


def test_an_empty_history_still_renders() -> None:
    html = render_html(report(history=[], checks=[]))
    assert "no verifications yet" in html
    assert "No verifications recorded yet." in render_markdown(report(history=[]))


def test_write_report_picks_the_format_from_the_file_name(tmp_path: Path) -> None:
    assert write_report(report(), tmp_path / "drill.html") == "html"
    assert write_report(report(), tmp_path / "drill.md") == "markdown"
    assert (tmp_path / "drill.html").read_text().startswith("<!DOCTYPE html>")
    assert (tmp_path / "drill.md").read_text().startswith("# DR drill report, app, 2026-11-22\n")


def test_chart_axis_uses_round_steps_with_room_above() -> None:
    assert [nice_step(value) for value in (0.7, 1.2, 14.0, 143.0, 9000.0)] == [0.8, 1.5, 15.0, 150.0, 10000.0]
    assert axis_top(45.9) == 60.0
    assert axis_top(0.0) == 4.0


def test_chart_draws_a_threshold_that_fits_and_names_one_that_does_not() -> None:
    fits = svg_chart(
        [50.0, 60.0], labels=["a", "b"], unit="s", title="t", threshold=90, threshold_label="RTO"
    )
    assert 'class="threshold"' in fits
    off = svg_chart([1.0, 2.0], labels=["a", "b"], unit="s", title="t", threshold=900, threshold_label="RTO")
    assert 'class="threshold"' not in off and "RTO: far above this scale" in off


def test_chart_marks_a_failed_verification_without_a_value() -> None:
    chart = svg_chart(
        [10.0, None], labels=["a", "b"], statuses=["success", "failure"], unit="s", title="t", kind="bar"
    )
    assert chart.count("<rect") == 1
    assert 'class="failed-mark"' in chart


def test_text_bars_scale_to_the_largest_value() -> None:
    assert text_bar(10, 10, width=4) == "████"
    assert text_bar(5, 10, width=4) == "██░░"
    assert text_bar(0.01, 10, width=4) == "█░░░"
    assert text_bar(None, 10, width=4) == "····"


@pytest.mark.parametrize(
    ("age", "level"), [(None, "red"), (0.0, "green"), (2880.0, "green"), (2881.0, "amber"), (3600.0, "amber"),
                       (3601.0, "red")],
)  # fmt: skip
def test_rpo_level_is_amber_above_80_percent(age: float | None, level: str) -> None:
    assert rpo_level(age, 3600.0) == level


# The summary agrees with the verdict ------------------------------------------------------------


def test_a_failed_smoke_check_is_counted_and_turns_the_checks_card_red() -> None:
    # Given a drill whose verification passed every check but one of whose four smoke checks failed
    failed = report(
        status="FAIL",
        checks_passed=12,
        checks_total=12,
        issues=["smoke check failed: no orgs: returned false"],
        smoke=[smoke("health"), smoke("auth"), smoke("orgs"), smoke("no orgs", "failed", "returned false")],
    )

    # When it is rendered
    html, text = render_html(failed), render_markdown(failed)

    # Then the checks card counts the smoke checks and is red, and so says the Markdown summary
    assert html_field(html, "checks") == "15/16"
    assert "failed" in card_class(html, "checks")
    assert "verification 12/12 · smoke 3/4" in html
    assert "| All checks passed | 15/16 (verification 12/12, smoke 3/4) |" in text
    assert "| Checks passed | 12/12 | | success |" in text  # the verification's own row is unchanged


@pytest.mark.parametrize(
    ("changes", "red_card"),
    [
        (
            {
                "backup_status": "failed",
                "verification_status": None,
                "checks_passed": 0,
                "checks_total": 0,
                "rto_measured_seconds": None,
                "rto_met": None,
            },
            "backup-duration",
        ),
        (
            {
                "verification_status": "failure",
                "checks": [Check(name="t", severity="critical", status="failed")],
            },
            "checks",
        ),
        ({"rto_measured_seconds": 950.0, "rto_met": False}, "restore-duration"),
        ({"rto_measured_seconds": None, "rto_met": None}, "restore-duration"),
        ({"rpo_measured_seconds": 4000.0, "rpo_met": False}, "backup-age"),
        ({"smoke": [smoke("health", "failed", "answered 500")]}, "checks"),
        ({"smoke": []}, "checks"),
    ],
)
def test_every_failed_drill_has_a_red_card_saying_why(changes: dict[str, object], red_card: str) -> None:
    failed = report(status="FAIL", **changes)

    assert card_states(failed)[red_card] == "failed"
    assert "failed" in card_class(render_html(failed), red_card)


def test_a_drill_that_held_with_margin_has_no_red_or_amber_card() -> None:
    passed = report(checks_passed=12, checks_total=12, smoke=[smoke("health")])

    states = card_states(passed)

    assert set(states.values()) == {"", "passed"}
    assert "failed" not in card_class(render_html(passed), "checks")


def test_a_restore_near_the_rto_is_amber() -> None:
    near = report(rto_measured_seconds=900 * NEAR_OBJECTIVE, restore_seconds=720.0)
    assert card_states(near)["restore-duration"] == "warning"
    assert card_states(report(rto_measured_seconds=900 * NEAR_OBJECTIVE - 1))["restore-duration"] == "passed"


# Title, context, recommendations -------------------------------------------------------------


def test_the_title_names_the_target_and_the_day() -> None:
    html = render_html(report())

    assert render_markdown(report()).startswith("# DR drill report, app, 2026-11-22\n")
    assert "<h1>DR drill report, app, 2026-11-22</h1>" in html
    assert "<title>DR drill report, app, 2026-11-22: PASS</title>" in html


def test_the_run_context_is_in_both_reports() -> None:
    text, html = render_markdown(report()), render_html(report())

    assert "## Run context" in text
    for line in (
        "- Source database: `db.internal:5432/app`",
        "- drsentry version: `0.1.0`",
        "- Run by: `alice on ops-1`",
        f"- Configuration: `sha256:{'ab' * 32} of drsentry.yaml`",
    ):
        assert line in text
    assert "<dt>Source database</dt><dd>db.internal:5432/app</dd>" in html
    assert "<dt>Run by</dt><dd>alice on ops-1</dd>" in html


def measured(**changes: object) -> DrillReport:
    """A drill that held with margin everywhere (its backup as large as the earlier ones' median,
    403 MB), changed as given."""
    return report(
        **{"checks_passed": 12, "checks_total": 12, "issues": [], "backup_size_bytes": 403_000_000, **changes}
    )


def test_a_drill_that_held_with_margin_recommends_nothing() -> None:
    assert drill_recommendations(measured()) == []
    assert "None: every objective held with margin and every check passed." in render_markdown(measured())


@pytest.mark.parametrize(
    ("changes", "advice"),
    [
        ({"rto_measured_seconds": 720.0}, "The restore took 12 min, 80% of the RTO of 15 min"),
        (
            {"rto_measured_seconds": 950.0, "rto_met": False},
            "The restore took 15 min 50 s, over the RTO of 15 min",
        ),
        (
            {"rpo_measured_seconds": 2880.0},
            "The newest backup was 48 min old when the drill began, 80% of the RPO of 1 h",
        ),
        (
            {"rpo_measured_seconds": 4000.0, "rpo_met": False},
            "was 1 h 7 min old when the drill began, over the RPO of 1 h",
        ),
        (
            {
                "checks": [
                    Check(name="recent rows", severity="warning", status="failed", detail="none in 2 days")
                ]
            },
            "Warning check 'recent rows' failed (none in 2 days)",
        ),
        (
            {"smoke": [smoke("health", "failed", "answered 500")]},
            "Smoke check 'health' failed on the restored copy (answered 500)",
        ),
        ({"smoke": []}, "The smoke checks did not run: the restore did not complete."),
        (
            {"backup_size_bytes": 600_000_000},
            "The backup is 49% larger than the median of the 5 earlier verified backup(s) (403.0 MB)",
        ),
        (
            {"backup_size_bytes": 200_000_000},
            "The backup is 50% smaller than the median of the 5 earlier verified backup(s)",
        ),
        (
            {
                "checks": [
                    Check(name="critical tables", severity="critical", status="failed", detail="missing: x")
                ]
            },
            "Critical check(s) failed (critical tables)",
        ),
        ({"backup_status": "failed"}, "Fix the backup first"),
    ],
)
def test_recommendations_follow_from_what_was_measured(changes: dict[str, object], advice: str) -> None:
    # Given a drill that measured this
    drill = measured(**changes)

    # Then the one recommendation says what to do about it, in both reports
    (recommendation,) = drill_recommendations(drill)
    assert advice in recommendation
    drill.recommendations = [recommendation]
    assert f"- {recommendation}" in render_markdown(drill)
    assert advice.replace("'", "&#x27;") in render_html(drill)


def test_size_drift_within_the_threshold_is_not_a_recommendation() -> None:
    # the earlier backups' median is 403 MB
    assert drill_recommendations(measured(backup_size_bytes=int(403e6 * (1 + SIZE_DRIFT)) - 1)) == []
    assert drill_recommendations(measured(backup_size_bytes=int(403e6 * (1 - SIZE_DRIFT)) + 1)) == []


def test_the_drills_own_backup_is_not_its_own_size_baseline() -> None:
    # Given a history whose newest point is the drill's own verification, far larger than the rest
    history = report().history
    own = history[-1].model_copy(
        update={"backup_id": "20261122T030000042Z-1a2b3c4d", "backup_size_mb": 900.0}
    )
    drill = measured(history=[*history[:-1], own], backup_size_bytes=900_000_000)

    # Then it is measured against the four earlier ones
    (advice,) = drill_recommendations(drill)
    assert "than the median of the 4 earlier verified backup(s) (402.5 MB)" in advice


# Charts -------------------------------------------------------------------------------------


def test_markdown_restore_bars_are_scaled_to_the_rto() -> None:
    points = [
        HistoryPoint(
            verified_at=f"2026-11-0{day}T03:00:00Z",
            backup_id=f"b{day}",
            status="success",
            restore_seconds=seconds,
            backup_size_mb=10.0,
        )
        for day, seconds in ((1, 450.0), (2, 900.0), (3, 1800.0))
    ]

    text = render_markdown(report(history=points))

    assert "RTO of 15 min (a full bar is the RTO)" in text
    assert "| 7 min 30 s | `████████░░░░░░░░` |" in text
    assert "| 15 min | `████████████████` |" in text
    assert "| 30 min | `████████████████` over the RTO |" in text


@pytest.mark.parametrize(
    ("stamps", "labels"),
    [
        (["2026-11-22T03:00:00Z", "2026-11-22T04:10:00Z"], ["2026-11-22 03:00", "2026-11-22 04:10"]),
        (["2026-11-22T03:00:05Z", "2026-11-22T03:00:41Z"], ["2026-11-22 03:00:05", "2026-11-22 03:00:41"]),
        (
            ["2026-11-22T03:00:05Z", "2026-11-22T03:00:05Z"],
            ["2026-11-22 03:00:05 #1", "2026-11-22 03:00:05 #2"],
        ),
        (["2026-11-22T03:00:05Z"], ["2026-11-22 03:00"]),
    ],
)
def test_chart_labels_differ_even_when_the_points_are_seconds_apart(
    stamps: list[str], labels: list[str]
) -> None:
    assert time_labels(stamps) == labels


def test_the_html_charts_first_and_last_labels_differ_with_two_points_in_one_minute() -> None:
    points = [
        HistoryPoint(
            verified_at=stamp, backup_id=f"b{i}", status="success", restore_seconds=1.0, backup_size_mb=1.0
        )
        for i, stamp in enumerate(["2026-11-22T03:00:05Z", "2026-11-22T03:00:41Z"])
    ]

    html = render_html(report(history=points))

    labels = re.findall(r'class="axis x-label">([^<]*)<', html)
    assert labels == ["2026-11-22 03:00:05", "2026-11-22 03:00:41"] * 2  # restore chart, size chart
