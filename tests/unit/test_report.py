"""The drill report and its rules (no database, no AWS): numbers a script can read back."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from drsentry.core.records import Check
from drsentry.operator.drill import DrillReport, HistoryPoint, drill_status
from drsentry.operator.drill_report import (
    axis_top,
    format_seconds,
    nice_step,
    render_html,
    render_markdown,
    svg_chart,
    text_bar,
    write_report,
)
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
    )
    return base.model_copy(update=changes)


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
    assert "`████████████████` | 405.0 MB |" in text


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
    assert (tmp_path / "drill.md").read_text().startswith("# DR drill report: app")


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
