"""The drill report: Markdown for a ticket or a wiki, self-contained HTML (inline CSS and SVG,
nothing fetched) for a browser or an auditor. Pure functions of a `DrillReport`.

Both carry the seeds' drill report fields (status PASS/FAIL, total duration, backup and
restore duration, checks passed/total, issues), the measured RTO and RPO against their
targets, and the last 30 verifications as a chart; and what an operator's drill template asks
for: a dated title, recommendations derived from the measurements and the run's context for
an auditor. The values a script may want to read back are marked: `| Drill status | **PASS** |`
in Markdown, `data-field="status"` in HTML.

The summary agrees with the verdict: its check count includes the smoke checks, and every top
card is coloured by what it measured (a FAIL always has a red card saying why).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape
from pathlib import Path

from drsentry.operator.drill import NEAR_OBJECTIVE, DrillReport, HistoryPoint, format_seconds
from drsentry.operator.smoke import SmokeResult

STATUS_COLOURS = {"success": "#1f9d55", "warning": "#d68a00", "failure": "#d63c3c"}
BAR_WIDTH = 24


def format_megabytes(size_mb: float | None) -> str:
    if size_mb is None:
        return "-"
    return f"{size_mb * 1000:.0f} kB" if size_mb < 1 else f"{size_mb:,.1f} MB"


def objective_state(met: bool | None) -> str:
    return "met" if met else "missed" if met is False else "not measured"


def text_bar(value: float | None, full: float, width: int = 16) -> str:
    """`█████░░░`, a full bar being `full` (longer values are a full bar): a chart that survives
    any Markdown renderer."""
    if value is None or full <= 0:
        return "·" * width
    filled = min(width, max(1, round(width * value / full))) if value > 0 else 0
    return "█" * filled + "░" * (width - filled)


def report_title(report: DrillReport) -> str:
    """`DR drill report, app, 2026-11-30`: the target and the (UTC) day the drill ran."""
    return f"DR drill report, {report.target}, {report.started_at[:10]}"


CardState = str  # "passed", "warning", "failed", or "" for a plain figure


def check_totals(report: DrillReport) -> tuple[int, int, CardState]:
    """(passed, run, state) of the verification's checks and the smoke checks together. Failed:
    a critical check or a smoke check failed, smoke checks could not run, or nothing was checked;
    warning: only warning checks failed."""
    smoke = report.smoke or []
    passed = report.checks_passed + sum(result.status == "passed" for result in smoke)
    total = report.checks_total + len(smoke)
    if (
        report.verification_status in {None, "failure"}
        or (report.smoke is not None and not smoke)
        or any(result.status != "passed" for result in smoke)
    ):
        return passed, total, "failed"
    return passed, total, "warning" if passed < total or report.verification_status == "warning" else "passed"


def objective_card_state(measured: float | None, target: float, met: bool | None, near: float) -> CardState:
    """Failed when missed, warning above `near` of the target, passed otherwise; plain when not
    measured for want of an earlier backup."""
    if met is False:
        return "failed"
    if met is None or measured is None:
        return ""
    return "warning" if target > 0 and measured / target >= near else "passed"


def card_states(report: DrillReport) -> dict[str, CardState]:
    """The colour of each top card, from what it measured."""
    *_, checks = check_totals(report)
    backup_failed = report.backup_status != "completed"
    restore = objective_card_state(
        report.rto_measured_seconds, report.rto_target_seconds, report.rto_met, NEAR_OBJECTIVE
    )
    if not backup_failed and report.rto_measured_seconds is None:
        restore = "failed"  # the backup was there and the restore did not complete
    return {
        "total-duration": "",
        "backup-duration": "failed" if backup_failed else "passed",
        "restore-duration": restore,
        "backup-age": objective_card_state(
            report.rpo_measured_seconds, report.rpo_target_seconds, report.rpo_met, NEAR_OBJECTIVE
        ),
        "checks": checks,
    }


def context_rows(report: DrillReport) -> list[tuple[str, str]]:
    """The run's context for an auditor: what was drilled, with what, by whom."""
    context = report.context
    if context is None:
        return [("Run context", "not recorded")]
    return [
        ("Source database", context.source),
        ("drsentry version", context.drsentry_version),
        ("Run by", context.ran_by),
        ("Configuration", context.config_digest),
    ]


def time_labels(stamps: Sequence[str]) -> list[str]:
    """x-axis labels for ISO timestamps, as short as lets the first and the last differ: the
    minute, else the second; points within the same second are numbered."""
    minutes = [stamp[:16].replace("T", " ") for stamp in stamps]
    if len(stamps) < 2 or minutes[0] != minutes[-1]:
        return minutes
    seconds = [stamp[:19].replace("T", " ") for stamp in stamps]
    if seconds[0] != seconds[-1]:
        return seconds
    return [f"{label} #{number}" for number, label in enumerate(seconds, start=1)]


# Markdown ----------------------------------------------------------------------------------


def render_markdown(report: DrillReport) -> str:
    lines = [
        f"# {report_title(report)}",
        "",
        f"Drill of {report.started_at} to {report.finished_at} (UTC). "
        f"Next drill due by {report.next_drill_by}.",
        "",
        "## Executive summary",
        "",
        "| | |",
        "|---|---|",
        f"| Drill status | **{report.status}** |",
        f"| Total duration | {format_seconds(report.total_seconds)} |",
        f"| All checks passed | {_all_checks_text(report)} |",
        f"| Issues encountered | {len(report.issues)} |",
        "",
        "## Metrics",
        "",
        "| Metric | Measured | Target | Result |",
        "|---|---|---|---|",
        f"| Backup duration | {format_seconds(report.backup_seconds)} | | {report.backup_status or '-'} |",
        f"| Restore duration | {format_seconds(report.restore_seconds)} | | |",
        f"| Checks passed | {report.checks_passed}/{report.checks_total} | | "
        f"{report.verification_status or 'not verified'} |",
        _objective_row("RTO", report.rto_measured_seconds, report.rto_target_seconds, report.rto_met),
        _objective_row("RPO", report.rpo_measured_seconds, report.rpo_target_seconds, report.rpo_met),
        *([smoke_metric_row(report.smoke)] if report.smoke is not None else []),
        "",
        "RTO is the restore time of the fresh backup; "
        f"RPO is the age of {report.rpo_basis} when the drill began.",
        "",
        "## Issues",
        "",
    ]
    lines += [f"- {_markdown_cell(issue)}" for issue in report.issues] or ["None."]
    lines += ["", "## Recommendations", ""]
    lines += [f"- {_markdown_cell(advice)}" for advice in report.recommendations] or [
        "None: every objective held with margin and every check passed."
    ]
    lines += ["", "## Backup", ""]
    lines += [
        f"- Backup id: `{report.backup_id or '-'}`",
        f"- Size: {format_megabytes(_megabytes(report.backup_size_bytes))}",
        f"- Verification: `{report.verification_id or '-'}` ({report.verification_status or 'not run'}, "
        f"{report.checks_skipped} check(s) skipped)",
    ]
    lines += ["", "## Run context", ""]
    lines += [f"- {name}: `{_markdown_cell(value)}`" for name, value in context_rows(report)]
    if report.checks:
        lines += ["", "## Checks", "", "| Check | Severity | Status | Detail |", "|---|---|---|---|"]
        lines += [
            f"| {_markdown_cell(check.name)} | {check.severity} | {check.status} | "
            f"{_markdown_cell(check.detail)} |"
            for check in report.checks
        ]
    if report.smoke is not None:
        lines += ["", *markdown_smoke(report.smoke)]
    lines += ["", *markdown_history(report.history, report.rto_target_seconds), ""]
    return "\n".join(lines)


def _all_checks_text(report: DrillReport) -> str:
    """`14/15 (verification 11/11, smoke 3/4)`: every check of the drill, then where they ran."""
    passed, total, _state = check_totals(report)
    parts = [f"verification {report.checks_passed}/{report.checks_total}"]
    if report.smoke is not None:
        parts.append(f"smoke {smoke_summary(report.smoke)[0]}")
    return f"{passed}/{total} ({', '.join(parts)})"


def smoke_summary(results: Sequence[SmokeResult]) -> tuple[str, str]:
    """(`2/3`, `failed`): smoke checks passed of run, and the verdict."""
    passed = sum(result.status == "passed" for result in results)
    verdict = "not run" if not results else "passed" if passed == len(results) else "failed"
    return f"{passed}/{len(results)}", verdict


def smoke_metric_row(results: Sequence[SmokeResult]) -> str:
    count, verdict = smoke_summary(results)
    return f"| Smoke checks passed | {count} | | {verdict} |"


def markdown_smoke(results: Sequence[SmokeResult]) -> list[str]:
    lines = ["## Smoke checks", ""]
    if not results:
        return [*lines, "Not run: the restore did not complete."]
    lines += [
        "| Check | Kind | Against | Status | Time | Limit | Detail |",
        "|---|---|---|---|---:|---:|---|",
    ]
    lines += [
        f"| {_markdown_cell(result.name)} | {result.kind} | `{_markdown_cell(result.target)}` | "
        f"{result.status} | {result.seconds:.2f} s | {result.max_seconds:g} s | "
        f"{_markdown_cell(result.detail)} |"
        for result in results
    ]
    return lines


def _objective_row(name: str, measured: float | None, target: float, met: bool | None) -> str:
    return f"| {name} | {format_seconds(measured)} | {format_seconds(target)} | {objective_state(met)} |"


def _megabytes(size_bytes: int | None) -> float | None:
    return size_bytes / 1e6 if size_bytes is not None else None


def _markdown_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_history(points: Sequence[HistoryPoint], rto_seconds: float) -> list[str]:
    title = f"## Last {len(points)} verifications (oldest first)"
    if not points:
        return [title, "", "No verifications recorded yet."]
    largest = max((point.backup_size_mb or 0.0) for point in points)
    lines = [
        title,
        "",
        f"Restore time against the RTO of {format_seconds(rto_seconds)} (a full bar is the RTO), "
        "and backup size (a full bar is the largest backup).",
        "",
        "| Verified (UTC) | Backup | Status | Restore | | Size | |",
        "|---|---|---|---:|---|---:|---|",
    ]
    for point in points:
        over = point.restore_seconds is not None and point.restore_seconds > rto_seconds
        lines.append(
            f"| {point.verified_at} | `{point.backup_id}` | {point.status} | "
            f"{format_seconds(point.restore_seconds)} | `{text_bar(point.restore_seconds, rto_seconds)}`"
            f"{' over the RTO' if over else ''} | "
            f"{format_megabytes(point.backup_size_mb)} | `{text_bar(point.backup_size_mb, largest)}` |"
        )
    return lines


# SVG -----------------------------------------------------------------------------------------


NICE_STEPS = (1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0)
TICKS = 4


def nice_step(value: float) -> float:
    """The smallest 1, 1.5, 2, 2.5, 3, 4, 5, 6 or 8 times a power of ten that is at least `value`."""
    if value <= 0:
        return 1.0
    exponent = math.floor(math.log10(value))
    for step in NICE_STEPS:
        candidate = step * 10.0**exponent
        if candidate >= value * (1 - 1e-9):
            return candidate
    return 10.0 ** (exponent + 1)


def axis_top(largest: float) -> float:
    """The top of a y axis with TICKS round steps and some room above the largest value."""
    return nice_step(largest * 1.1 / TICKS) * TICKS


def _tick_label(value: float, unit: str) -> str:
    text = f"{value:.2f}".rstrip("0").rstrip(".") if value < 10 else f"{value:,.1f}".removesuffix(".0")
    return f"{text} {unit}"


def svg_chart(
    values: Sequence[float | None],
    *,
    labels: Sequence[str],
    statuses: Sequence[str] | None = None,
    unit: str,
    title: str,
    kind: str = "bar",
    threshold: float | None = None,
    threshold_label: str = "",
    colour: str = "#2563eb",
    width: int = 460,
    height: int = 200,
) -> str:
    """An inline SVG bar or line chart: y axis with round ticks, gridlines, the first and last x
    labels, an optional dashed threshold line (drawn when it fits the scale, else noted), and a
    red cross where a verification failed without a value. `title` labels it for screen readers."""
    largest = max((value for value in values if value is not None), default=0.0)
    threshold_fits = threshold is not None and threshold <= max(largest, 1e-9) * 3
    plot = _Plot(
        width=width,
        height=height,
        count=len(values),
        scale_top=axis_top(max(largest, threshold if threshold_fits and threshold else 0.0)),
    )
    statuses = statuses or [""] * len(values)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{escape(title)}" class="chart">',
        *_y_axis(plot, unit),
        *_failed_marks(plot, values, labels, statuses, unit),
    ]
    if kind == "bar":
        parts += _bars(plot, values, labels, statuses, unit=unit, colour=colour)
    else:
        parts += _line(plot, values, labels, unit=unit, colour=colour)
    if threshold is not None:
        parts += _threshold(plot, threshold, threshold_label, fits=threshold_fits)
    parts += _x_labels(plot, labels)
    parts.append("</svg>")
    return "".join(parts)


@dataclass(frozen=True)
class _Plot:
    """A chart's geometry: the plot area inside the margins, one slot per value, `scale_top` at the top."""

    width: int
    height: int
    count: int
    scale_top: float
    left: int = 52
    right: int = 12
    top: int = 22
    bottom: int = 30

    @property
    def plot_width(self) -> int:
        return self.width - self.left - self.right

    @property
    def plot_height(self) -> int:
        return self.height - self.top - self.bottom

    @property
    def base(self) -> int:
        """The y of the x axis."""
        return self.top + self.plot_height

    @property
    def slot(self) -> float:
        return self.plot_width / max(self.count, 1)

    def x_of(self, index: int) -> float:
        return self.left + self.slot * index + self.slot / 2

    def y_of(self, value: float) -> float:
        return self.base - self.plot_height * value / self.scale_top


def _y_axis(plot: _Plot, unit: str) -> list[str]:
    """Gridlines with round tick labels; a note in the middle when there is nothing to plot."""
    parts = []
    for index in range(TICKS + 1):
        y = plot.base - plot.plot_height * index / TICKS
        parts.append(
            f'<line x1="{plot.left}" y1="{y:.1f}" x2="{plot.left + plot.plot_width}" y2="{y:.1f}" '
            'class="grid"/>'
        )
        parts.append(
            f'<text x="{plot.left - 8}" y="{y + 4:.1f}" text-anchor="end" class="axis">'
            f"{escape(_tick_label(plot.scale_top * index / TICKS, unit))}</text>"
        )
    if plot.count == 0:
        parts.append(
            f'<text x="{plot.left + plot.plot_width / 2}" y="{plot.top + plot.plot_height / 2}" '
            'text-anchor="middle" class="axis">no verifications yet</text>'
        )
    return parts


def _failed_marks(
    plot: _Plot, values: Sequence[float | None], labels: Sequence[str], statuses: Sequence[str], unit: str
) -> list[str]:
    """A red cross on the axis where a verification failed without a value to plot."""
    return [
        f'<text x="{plot.x_of(index):.1f}" y="{plot.base - 4:.1f}" text-anchor="middle" '
        f'class="failed-mark">×<title>{escape(labels[index])}: '
        f"verification failed, no {escape(unit)} measured</title></text>"
        for index, value in enumerate(values)
        if value is None and statuses[index] == "failure"
    ]


def _bars(
    plot: _Plot,
    values: Sequence[float | None],
    labels: Sequence[str],
    statuses: Sequence[str],
    *,
    unit: str,
    colour: str,
) -> list[str]:
    """One bar per value, coloured by its verification's status."""
    bar = min(BAR_WIDTH, plot.slot * 0.7)
    parts = []
    for index, value in enumerate(values):
        if value is None:
            continue
        status = statuses[index]
        fill = STATUS_COLOURS.get(status, colour)
        y = plot.y_of(value)
        parts.append(
            f'<rect x="{plot.x_of(index) - bar / 2:.1f}" y="{y:.1f}" width="{bar:.1f}" '
            f'height="{max(plot.base - y, 1.0):.1f}" rx="2" fill="{fill}">'
            f"<title>{escape(labels[index])}: {value:g} {unit} ({escape(status)})</title></rect>"
        )
    return parts


def _line(
    plot: _Plot, values: Sequence[float | None], labels: Sequence[str], unit: str, colour: str
) -> list[str]:
    """A line through the values (gaps skipped), a light area under it and a dot per value."""
    indexed = [(index, value) for index, value in enumerate(values) if value is not None]
    if not indexed:
        return []
    path = " ".join(f"{plot.x_of(index):.1f},{plot.y_of(value):.1f}" for index, value in indexed)
    first, last = plot.x_of(indexed[0][0]), plot.x_of(indexed[-1][0])
    parts = [
        f'<polygon points="{first:.1f},{plot.base} {path} {last:.1f},{plot.base}" '
        f'fill="{colour}" opacity="0.12"/>',
        f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>',
    ]
    for index, value in indexed:
        parts.append(
            f'<circle cx="{plot.x_of(index):.1f}" cy="{plot.y_of(value):.1f}" r="3.5" fill="#fff" '
            f'stroke="{colour}" stroke-width="2">'
            f"<title>{escape(labels[index])}: {value:g} {unit}</title></circle>"
        )
    return parts


def _threshold(plot: _Plot, threshold: float, label: str, *, fits: bool) -> list[str]:
    """A dashed line at the threshold when it fits the scale; else a note that it is far above."""
    right_edge = plot.left + plot.plot_width
    if not fits:
        return [
            f'<text x="{right_edge}" y="12" text-anchor="end" class="threshold-label">'
            f"{escape(label)}: far above this scale</text>"
        ]
    y = plot.y_of(threshold)
    return [
        f'<line x1="{plot.left}" y1="{y:.1f}" x2="{right_edge}" y2="{y:.1f}" class="threshold"/>',
        f'<text x="{right_edge}" y="{y - 5:.1f}" text-anchor="end" class="threshold-label">'
        f"{escape(label)}</text>",
    ]


def _x_labels(plot: _Plot, labels: Sequence[str]) -> list[str]:
    """The first and the last label: the first starts at its bar and the last ends at its bar, so
    neither is cut off."""
    count = plot.count
    if not count:
        return []
    anchor = "middle" if count == 1 else "start"
    x_first = plot.x_of(0) - (0 if count == 1 else plot.slot / 2)
    parts = [
        f'<text x="{x_first:.1f}" y="{plot.height - 8}" text-anchor="{anchor}" class="axis x-label">'
        f"{escape(labels[0])}</text>"
    ]
    if count > 1:
        parts.append(
            f'<text x="{plot.x_of(count - 1) + plot.slot / 2:.1f}" y="{plot.height - 8}" text-anchor="end" '
            f'class="axis x-label">{escape(labels[-1])}</text>'
        )
    return parts


# HTML --------------------------------------------------------------------------------------

_CSS = """
:root { --ink: #1c2430; --muted: #5b6675; --line: #e3e7ee; --card: #ffffff; --page: #f4f6f9;
        --pass: #1f9d55; --fail: #d63c3c; --warn: #d68a00; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--page); color: var(--ink);
       font: 15px/1.5 -apple-system, BlinkMacSystemFont, "Segoe UI", Roboto, "Helvetica Neue", Arial,
             sans-serif; }
main { max-width: 1040px; margin: 0 auto; padding: 32px 24px 48px; }
header { display: flex; align-items: center; justify-content: space-between; gap: 16px; margin-bottom: 24px; }
h1 { font-size: 24px; margin: 0; }
h2 { font-size: 17px; margin: 0 0 12px; }
.sub { color: var(--muted); font-size: 13px; }
.status { font-size: 22px; font-weight: 700; letter-spacing: .06em; color: #fff; padding: 10px 26px;
          border-radius: 10px; }
.status.PASS { background: var(--pass); } .status.FAIL { background: var(--fail); }
.cards { display: grid; grid-template-columns: repeat(5, 1fr); gap: 14px; margin-bottom: 18px; }
.grid2 { display: grid; grid-template-columns: 1fr 1fr; gap: 14px; margin-bottom: 18px; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 10px; padding: 16px 18px; }
.kpi .label { color: var(--muted); font-size: 12px; text-transform: uppercase; letter-spacing: .05em; }
.kpi .value { font-size: 26px; font-weight: 650; margin-top: 4px; }
.kpi .hint { color: var(--muted); font-size: 12px; }
.kpi.passed { border-top: 4px solid var(--pass); } .kpi.warning { border-top: 4px solid var(--warn); }
.kpi.failed { border-top: 4px solid var(--fail); background: #fdf2f2; }
.kpi.failed .value { color: var(--fail); } .kpi.warning .value { color: var(--warn); }
ul.advice { margin: 0; padding-left: 20px; } ul.advice li { margin: 4px 0; }
.objective { display: grid; grid-template-columns: 56px 1fr 110px; align-items: center; gap: 12px;
             padding: 8px 0; }
.objective + .objective { border-top: 1px solid var(--line); }
.objective .name { font-weight: 700; }
.meter { height: 10px; background: #edf0f5; border-radius: 5px; overflow: hidden; }
.meter span { display: block; height: 100%; border-radius: 5px; }
.objective .numbers { font-size: 13px; color: var(--muted); margin-top: 4px; }
.pill { display: inline-block; font-size: 12px; font-weight: 600; padding: 2px 10px; border-radius: 999px;
        color: #fff; text-align: center; }
.pill.met, .pill.passed, .pill.success { background: var(--pass); }
.pill.missed, .pill.failed, .pill.failure { background: var(--fail); }
.pill.warning { background: var(--warn); }
.pill.skipped, .pill.not-measured, .pill.not-run { background: #9aa4b2; }
ul.issues { margin: 0; padding-left: 20px; } ul.issues li { margin: 4px 0; }
.none { color: var(--pass); font-weight: 600; }
table { width: 100%; border-collapse: collapse; font-size: 13px; }
th { text-align: left; color: var(--muted); font-weight: 600; border-bottom: 1px solid var(--line);
     padding: 6px 8px; }
td { border-bottom: 1px solid var(--line); padding: 6px 8px; vertical-align: top; }
td.detail { color: var(--muted); word-break: break-word; }
dl { display: grid; grid-template-columns: 120px 1fr; gap: 6px 12px; margin: 0; font-size: 13px; }
dt { color: var(--muted); } dd { margin: 0; font-family: ui-monospace, SFMono-Regular, Menlo, monospace;
                                  overflow-wrap: anywhere; }
.chart { width: 100%; height: auto; }
.failed-mark { font-size: 16px; font-weight: 700; fill: var(--fail); }
.axis { font-size: 11px; fill: var(--muted); }
.grid { stroke: var(--line); stroke-width: 1; }
.threshold { stroke: var(--fail); stroke-width: 1.5; stroke-dasharray: 6 4; }
.threshold-label { font-size: 11px; fill: var(--fail); }
footer { color: var(--muted); font-size: 12px; margin-top: 24px; text-align: center; }
@media (max-width: 760px) { .cards { grid-template-columns: 1fr 1fr; }
                            .grid2 { grid-template-columns: 1fr; } }
"""


def _pill(text: str) -> str:
    return f'<span class="pill {escape(text.replace(" ", "-"))}">{escape(text)}</span>'


def _kpi(label: str, value: str, field: str, hint: str = "", state: CardState = "") -> str:
    return (
        f'<div class="card kpi {state}" data-card="{field}"><div class="label">{escape(label)}</div>'
        f'<div class="value" data-field="{field}">{escape(value)}</div>'
        f'<div class="hint">{escape(hint)}</div></div>'
    )


def _objective(name: str, measured: float | None, target: float, met: bool | None, field: str) -> str:
    share = 0.0 if measured is None or target <= 0 else min(measured / target, 1.0)
    colour = "var(--pass)" if met else "var(--fail)" if met is False else "#9aa4b2"
    width = f"{max(share * 100, 1.5 if measured is not None else 0):.1f}%"
    return (
        f'<div class="objective"><div class="name">{name}</div><div>'
        f'<div class="meter"><span style="width:{width};background:{colour}"></span></div>'
        f'<div class="numbers">measured <b data-field="{field}-measured">{format_seconds(measured)}</b> '
        f'of a target of <b data-field="{field}-target">{format_seconds(target)}</b></div></div>'
        f'<div data-field="{field}-result">{_pill(objective_state(met))}</div></div>'
    )


def render_html(report: DrillReport) -> str:
    # The page stays one template below, read top to bottom as the browser shows it; each of its
    # parts that takes more than a line is built by a helper above or below.
    points = report.history
    restore_chart, size_chart = _charts(report)
    issues = _html_list(report.issues, "issues", '<p class="none">No issues.</p>')
    recommendations = _html_list(
        report.recommendations,
        "advice",
        '<p class="none">None: every objective held with margin and every check passed.</p>',
    )
    smoke_section = html_smoke(report.smoke) if report.smoke is not None else ""
    body = f"""
<main>
<header>
  <div><h1>{escape(report_title(report))}</h1>
  <div class="sub">{escape(report.started_at)} to {escape(report.finished_at)} UTC ·
  {len(report.issues)} issue(s) · next drill due by {escape(report.next_drill_by)}</div></div>
  <div class="status {report.status}" data-field="status">{report.status}</div>
</header>
{_cards(report)}
<section class="grid2">
  <div class="card"><h2>Objectives</h2>
    {_objective("RTO", report.rto_measured_seconds, report.rto_target_seconds, report.rto_met, "rto")}
    {_objective("RPO", report.rpo_measured_seconds, report.rpo_target_seconds, report.rpo_met, "rpo")}
    <div class="sub">RTO: restore time of the fresh backup. RPO: age of {escape(report.rpo_basis)}
    when the drill began.</div>
  </div>
  <div class="card"><h2>Issues (<span data-field="issues">{len(report.issues)}</span>)</h2>{issues}</div>
</section>
<section class="card" style="margin-bottom:18px"><h2>Recommendations</h2>{recommendations}</section>
<section class="grid2">
  <div class="card"><h2>Restore time</h2>{restore_chart}</div>
  <div class="card"><h2>Backup size</h2>{size_chart}</div>
</section>
<div class="sub" style="margin:-8px 0 18px">Last {len(points)} verification(s) of {escape(report.target)},
oldest first; bars coloured by verification status (green success, amber warning, red failure).</div>
<section class="grid2">
  <div class="card"><h2>Checks</h2>{_checks_table(report)}</div>
  <div class="card"><h2>Details and run context</h2><dl>{_details(report)}</dl></div>
</section>
{smoke_section}
<footer>Generated by drsentry drill · the same backup and verify code as the scheduled functions</footer>
</main>"""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(report_title(report))}: {report.status}</title>"
        f"<style>{_CSS}</style></head><body>{body}</body></html>\n"
    )


def _cards(report: DrillReport) -> str:
    """The five top cards, each coloured by what it measured (card_states)."""
    states = card_states(report)
    passed, total, _state = check_totals(report)
    smoke_hint = f" · smoke {smoke_summary(report.smoke)[0]}" if report.smoke is not None else ""
    cards = [
        _kpi(
            "Total duration",
            format_seconds(report.total_seconds),
            "total-duration",
            "backup, restore, checks",
        ),
        _kpi(
            "Backup duration",
            format_seconds(report.backup_seconds),
            "backup-duration",
            report.backup_status or "",
            states["backup-duration"],
        ),
        _kpi(
            "Restore duration",
            format_seconds(report.restore_seconds),
            "restore-duration",
            f"RTO {format_seconds(report.rto_target_seconds)} · download + pg_restore",
            states["restore-duration"],
        ),
        _kpi(
            "Backup age",
            format_seconds(report.rpo_measured_seconds),
            "backup-age",
            f"RPO {format_seconds(report.rpo_target_seconds)} · when the drill began",
            states["backup-age"],
        ),
        _kpi(
            "Checks passed",
            f"{passed}/{total}",
            "checks",
            f"verification {report.checks_passed}/{report.checks_total}{smoke_hint} · "
            f"{report.checks_skipped} skipped",
            states["checks"],
        ),
    ]
    return '<section class="cards">\n' + "".join(f"  {card}\n" for card in cards) + "</section>"


def _charts(report: DrillReport) -> tuple[str, str]:
    """The restore times against the RTO (bars) and the backup sizes (a line) of the history."""
    points = report.history
    labels = time_labels([point.verified_at for point in points])
    restore_chart = svg_chart(
        [point.restore_seconds for point in points],
        labels=labels,
        statuses=[point.status for point in points],
        unit="s",
        title="Restore time in seconds, last verifications",
        kind="bar",
        threshold=report.rto_target_seconds,
        threshold_label=f"RTO {format_seconds(report.rto_target_seconds)}",
    )
    size_chart = svg_chart(
        [point.backup_size_mb for point in points],
        labels=labels,
        unit="MB",
        title="Backup size in MB, last verifications",
        kind="line",
        colour="#7c3aed",
    )
    return restore_chart, size_chart


def _html_list(items: Sequence[str], css_class: str, when_empty: str) -> str:
    if not items:
        return when_empty
    return f'<ul class="{css_class}">' + "".join(f"<li>{escape(item)}</li>" for item in items) + "</ul>"


def _checks_table(report: DrillReport) -> str:
    if not report.checks:
        return "<p>No checks ran: the backup did not complete.</p>"
    rows = "".join(
        f"<tr><td>{escape(check.name)}</td><td>{escape(check.severity)}</td><td>{_pill(check.status)}</td>"
        f'<td class="detail">{escape(check.detail)}</td></tr>'
        for check in report.checks
    )
    return (
        "<table><thead><tr><th>Check</th><th>Severity</th><th>Status</th><th>Detail</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>"
    )


def _details(report: DrillReport) -> str:
    """The ids and times of the drill, then its run context, as definition list entries."""
    return "".join(
        f"<dt>{escape(name)}</dt><dd>{escape(value)}</dd>"
        for name, value in (
            ("Backup id", report.backup_id or "-"),
            ("Backup size", format_megabytes(_megabytes(report.backup_size_bytes))),
            ("Verification id", report.verification_id or "-"),
            ("Verification", report.verification_status or "not run"),
            ("Started (UTC)", report.started_at),
            ("Finished (UTC)", report.finished_at),
            ("Next drill by", report.next_drill_by),
            *context_rows(report),
        )
    )


def html_smoke(results: Sequence[SmokeResult]) -> str:
    count, verdict = smoke_summary(results)
    rows = "".join(
        f"<tr><td>{escape(result.name)}</td><td>{result.kind}</td><td>{escape(result.target)}</td>"
        f"<td>{_pill(result.status)}</td><td>{result.seconds:.2f} s</td><td>{result.max_seconds:g} s</td>"
        f'<td class="detail">{escape(result.detail)}</td></tr>'
        for result in results
    )
    table = (
        "<table><thead><tr><th>Check</th><th>Kind</th><th>Against</th><th>Status</th><th>Time</th>"
        f"<th>Limit</th><th>Detail</th></tr></thead><tbody>{rows}</tbody></table>"
        if results
        else "<p>Not run: the restore did not complete.</p>"
    )
    return (
        '<section class="card" style="margin-bottom:18px"><h2>Smoke checks '
        f'(<span data-field="smoke">{count}</span> passed, {_pill(verdict)})</h2>{table}</section>'
    )


def write_report(report: DrillReport, path: Path) -> str:
    """Write HTML when the file name ends in .html (or .htm), Markdown otherwise; return the format."""
    html = path.suffix.lower() in {".html", ".htm"}
    text = render_html(report) if html else render_markdown(report)
    path.write_text(text, encoding="utf-8")
    return "html" if html else "markdown"
