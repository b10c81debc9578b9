"""The demo's end-of-run report: ``index.html`` beside one PNG per plot, all local files.

No network, no external CSS or JS: the directory can be zipped, attached to a CI run or opened
offline. Plots are drawn on bare :class:`~matplotlib.figure.Figure` objects (Agg rendering, no
pyplot global state), at a fixed size and DPI, with fixed file names and no software version in
the PNG metadata, so the same timeline gives the same files. A plot with nothing to show is left
out with a note in its place rather than failing the report.
"""

from __future__ import annotations

import html
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from inspectloop.demo.timeline import (
    GOAL_DETECTION_INSPECTIONS,
    GOAL_ESCAPES_DURING_TRANSITION,
    GOAL_FALSE_REJECT_RATE,
    GOAL_SECONDS_TO_NEW_MODEL,
    GOALS,
    MODES,
    Headline,
    Mark,
    ModeCounts,
    Sample,
    Timeline,
    goals_met,
)

DPI = 100
WIDTH_IN = 10.0
PANEL_HEIGHT_IN = 2.4  # per stacked panel (one per line or per rate)
RATE_WINDOW = 5  # samples per rate window: one quiet interval should not look like a trend
# Dropping the "Software" key keeps the matplotlib version out of the bytes (deterministic files).
PNG_METADATA: dict[str, str | None] = {"Software": None}
ANNOTATION_CHARS = 48  # long mark texts are cut in the plots (the table has them in full)

DRIFT_PNG = "drift.png"
MODES_PNG = "line_modes.png"
QUALITY_PNG = "quality_rates.png"
REVIEWS_PNG = "review_load.png"
ROLLOUT_PNG = "rollout.png"
ALL_PNGS = (DRIFT_PNG, MODES_PNG, QUALITY_PNG, REVIEWS_PNG, ROLLOUT_PNG)

# Fixed colours (not the style's cycle) so a version keeps its colour whatever the style.
_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2")
_MODE_COLOURS = {"auto": "#2ca02c", "guarded": "#ff7f0e", "manual": "#d62728"}
_ROLLOUT_KINDS = ("rollout", "model_version")


@dataclass(frozen=True)
class _Section:
    title: str
    caption: str
    image: str | None  # PNG file name; None when there was nothing to plot
    note: str = ""


def write_report(timeline: Timeline, out_dir: Path) -> Path:
    """Write ``out_dir/index.html`` and its PNGs; returns the path of index.html."""
    out_dir.mkdir(parents=True, exist_ok=True)
    sections = [
        _plot_drift(timeline, out_dir),
        _plot_modes(timeline, out_dir),
        _plot_quality(timeline, out_dir),
        _plot_reviews(timeline, out_dir),
        _plot_rollout(timeline, out_dir),
    ]
    # A plot skipped this time must not leave last run's PNG looking current.
    drawn = {s.image for s in sections}
    for name in ALL_PNGS:
        if name not in drawn:
            (out_dir / name).unlink(missing_ok=True)
    index = out_dir / "index.html"
    index.write_text(_html(timeline, sections), encoding="utf-8")
    return index


# ---------------------------------------------------------------------------------------------
# Plots


def _figure(panels: int) -> tuple[Figure, list[Axes]]:
    fig = Figure(figsize=(WIDTH_IN, 1.0 + PANEL_HEIGHT_IN * panels), dpi=DPI)
    axes = fig.subplots(panels, 1, sharex=True, squeeze=False)
    return fig, [row[0] for row in axes]


def _save(fig: Figure, out_dir: Path, name: str) -> str:
    axes = fig.get_axes()
    if axes:
        axes[-1].set_xlabel("time since traffic started (s)")
    fig.tight_layout()
    fig.savefig(out_dir / name, dpi=DPI, format="png", metadata=PNG_METADATA)
    return name


def _redesign(ax: Axes, tl: Timeline, label: bool = True) -> None:
    if tl.redesign_at is not None:
        ax.axvline(
            tl.redesign_at,
            color="black",
            linestyle="--",
            linewidth=1.2,
            label=f"redesign ({tl.redesign_line})" if label else None,
        )


def _ratio(stat: float | None, threshold: float | None) -> float:
    # A gap (NaN) rather than a made-up value when a detector has no usable threshold.
    if stat is None or threshold is None or not threshold > 0:
        return math.nan
    r = stat / threshold
    return r if math.isfinite(r) else math.nan


def _drift_line(tl: Timeline) -> str:
    lines = tl.lines()
    if tl.redesign_line:
        return tl.redesign_line
    # No redesign: show the first line that has drift data at all.
    for line in lines:
        if any(s.drift_statistic for s in tl.samples_for(line)):
            return line
    return lines[0] if lines else ""


def _plot_drift(tl: Timeline, out_dir: Path) -> _Section:
    line = _drift_line(tl)
    title = f"Drift statistic / threshold on {line or 'the redesigned line'}"
    caption = (
        "Each detector's latest statistic divided by its threshold, so all detectors share one "
        "axis and the alarm level is 1.0. Dashed black: the redesign; dotted red: alerts; "
        "shaded: the line out of auto (orange guarded, red manual)."
    )
    samples = tl.samples_for(line)
    detectors = sorted({d for s in samples for d in s.drift_statistic})
    if not detectors:
        return _Section(title, caption, None, "No drift statistics were recorded for this line.")
    fig, (ax,) = _figure(1)
    t = [s.t for s in samples]
    peak = 1.0
    for i, d in enumerate(detectors):
        ratio = [_ratio(s.drift_statistic.get(d), s.drift_threshold.get(d)) for s in samples]
        peak = max([peak, *(r for r in ratio if not math.isnan(r))])
        ax.plot(t, ratio, color=_COLOURS[i % len(_COLOURS)], linewidth=1.4, label=d)
    ax.axhline(1.0, color="red", linewidth=1.0, label="alarm level")
    _shade_modes(ax, samples)
    _redesign(ax, tl)
    for m in tl.marks:
        if m.kind == "alert" and m.line in (line, ""):
            ax.axvline(m.t, color="red", linestyle=":", linewidth=1.0)
    # A redesign pushes statistics far past the threshold; symlog keeps 0..1 readable beside it.
    if peak > 10.0:
        ax.set_yscale("symlog", linthresh=1.0)
    ax.set_ylim(0.0, peak * (2.0 if peak > 10.0 else 1.15))
    ax.set_ylabel("statistic / threshold")
    ax.set_title(line)
    ax.legend(loc="upper left", fontsize=8)
    return _Section(title, caption, _save(fig, out_dir, DRIFT_PNG))


def _shade_modes(ax: Axes, samples: Sequence[Sample]) -> None:
    for start, end, mode in _runs(samples, lambda s: s.mode):
        if mode != "auto":
            ax.axvspan(start, end, color=_MODE_COLOURS.get(mode, "grey"), alpha=0.12, linewidth=0)


def _runs(
    samples: Sequence[Sample], key: Callable[[Sample], str]
) -> list[tuple[float, float, str]]:
    """Contiguous (start, end, value) runs of key over time-ordered samples."""
    runs: list[tuple[float, float, str]] = []
    for i, s in enumerate(samples):
        end = samples[i + 1].t if i + 1 < len(samples) else s.t
        value = key(s)
        if runs and runs[-1][2] == value:
            runs[-1] = (runs[-1][0], end, value)
        else:
            runs.append((s.t, end, value))
    return runs


def _plot_modes(tl: Timeline, out_dir: Path) -> _Section:
    title = "Line mode over time"
    caption = (
        "auto: the model decides; guarded: rejects and low-confidence passes go to human review; "
        "manual: every image goes to human review. Dashed: the redesign."
    )
    lines = [line for line in tl.lines() if tl.samples_for(line)]
    if not lines:
        return _Section(title, caption, None, "No samples were recorded.")
    # Unknown modes still get a level of their own rather than being dropped.
    levels = list(MODES) + sorted({s.mode for s in tl.samples} - set(MODES))
    fig, axes = _figure(len(lines))
    for ax, line in zip(axes, lines, strict=True):
        samples = tl.samples_for(line)
        t = [s.t for s in samples]
        y = [levels.index(s.mode) for s in samples]
        ax.step(t, y, where="post", color="#333333", linewidth=1.6)
        _shade_modes(ax, samples)
        _redesign(ax, tl, label=False)
        ax.set_yticks(range(len(levels)), levels)
        ax.set_ylim(-0.5, len(levels) - 0.5)
        ax.set_title(line, fontsize=10)
    return _Section(title, caption, _save(fig, out_dir, MODES_PNG))


def _windowed(
    samples: Sequence[Sample],
    num: Callable[[Sample], float],
    den: Callable[[Sample], float],
    scale: float = 1.0,
) -> tuple[list[float], list[float]]:
    """scale * d(num) / d(den) over the last RATE_WINDOW sampling intervals, at each sample.

    NaN where the window has no denominator or a counter went backwards (a restarted recorder):
    a gap is honest, a zero would look like a perfect line.
    """
    ts: list[float] = []
    rates: list[float] = []
    for i in range(1, len(samples)):
        j = max(0, i - RATE_WINDOW)
        d_num = num(samples[i]) - num(samples[j])
        d_den = den(samples[i]) - den(samples[j])
        ts.append(samples[i].t)
        rates.append(scale * d_num / d_den if d_den > 0 and d_num >= 0 else math.nan)
    return ts, rates


def _plot_quality(tl: Timeline, out_dir: Path) -> _Section:
    title = "False reject and escape rates over time"
    caption = (
        f"Per line, over a sliding window of {RATE_WINDOW} sampling intervals: false rejects "
        "(model rejected a good unit) and escapes (model passed a defective unit without review) "
        "as a share of the inspections answered in the window, from ground truth. Dotted: the "
        f"{GOAL_FALSE_REJECT_RATE:.1%} false reject goal."
    )
    lines = [line for line in tl.lines() if len(tl.samples_for(line)) >= 2]
    if not lines:
        return _Section(title, caption, None, "Fewer than two samples per line: no rates.")
    fig, (ax_fr, ax_esc) = _figure(2)
    for i, line in enumerate(lines):
        samples = tl.samples_for(line)
        colour = _COLOURS[i % len(_COLOURS)]
        t, fr = _windowed(samples, lambda s: s.false_rejects, lambda s: s.inspections, 100.0)
        ax_fr.plot(t, fr, color=colour, linewidth=1.4, label=line)
        t, esc = _windowed(samples, lambda s: s.escapes, lambda s: s.inspections, 100.0)
        ax_esc.plot(t, esc, color=colour, linewidth=1.4, label=line)
    ax_fr.axhline(GOAL_FALSE_REJECT_RATE * 100, color="grey", linestyle=":", label="goal")
    for ax, name in ((ax_fr, "false reject rate (%)"), (ax_esc, "escape rate (%)")):
        _redesign(ax, tl)
        ax.set_ylabel(name)
        ax.set_ylim(bottom=0)
        ax.legend(loc="upper right", fontsize=8)
    return _Section(title, caption, _save(fig, out_dir, QUALITY_PNG))


def _plot_reviews(tl: Timeline, out_dir: Path) -> _Section:
    title = "Human-review load"
    caption = (
        f"Inspections flagged for human review per minute, per line, over a sliding window of "
        f"{RATE_WINDOW} sampling intervals."
    )
    lines = [line for line in tl.lines() if len(tl.samples_for(line)) >= 2]
    if not lines:
        return _Section(title, caption, None, "Fewer than two samples per line: no rates.")
    fig, (ax,) = _figure(1)
    for i, line in enumerate(lines):
        t, per_min = _windowed(tl.samples_for(line), lambda s: s.reviews, lambda s: s.t, scale=60.0)
        ax.plot(t, per_min, color=_COLOURS[i % len(_COLOURS)], linewidth=1.4, label=line)
    _redesign(ax, tl)
    ax.set_ylabel("reviews per minute")
    ax.set_ylim(bottom=0)
    ax.legend(loc="upper right", fontsize=8)
    return _Section(title, caption, _save(fig, out_dir, REVIEWS_PNG))


def _short(text: str) -> str:
    return text if len(text) <= ANNOTATION_CHARS else text[: ANNOTATION_CHARS - 1] + "…"


def _plot_rollout(tl: Timeline, out_dir: Path) -> _Section:
    title = "Model versions and rollout"
    caption = (
        "Background bands: the stable version per line (labelled where it starts); line: the "
        "share of the line's traffic the canary decides; dotted with text: rollout and "
        "model-version events. Dashed: the redesign."
    )
    lines = [line for line in tl.lines() if tl.samples_for(line)]
    if not lines:
        return _Section(title, caption, None, "No samples were recorded.")
    # One colour per version across all lines, in order of first appearance.
    versions: dict[str, str] = {}
    for s in sorted(tl.samples, key=lambda s: s.t):
        if s.stable_version and s.stable_version not in versions:
            versions[s.stable_version] = _COLOURS[len(versions) % len(_COLOURS)]
    fig, axes = _figure(len(lines))
    for ax, line in zip(axes, lines, strict=True):
        samples = tl.samples_for(line)
        for start, end, version in _runs(samples, lambda s: s.stable_version):
            if version:
                ax.axvspan(start, end, color=versions[version], alpha=0.15, linewidth=0)
            ax.text(
                start,
                0.97,
                f" stable {version or '(none)'}",
                transform=ax.get_xaxis_transform(),
                fontsize=8,
                va="top",
            )
        t = [s.t for s in samples]
        w = [100.0 * s.canary_weight for s in samples]
        ax.step(t, w, where="post", color="#d62728", linewidth=1.6, label="canary weight")
        for start, _end, canary in _runs(samples, lambda s: s.canary_version):
            if canary:
                ax.text(
                    start,
                    0.80,
                    f" canary {canary}",
                    transform=ax.get_xaxis_transform(),
                    fontsize=8,
                    va="top",
                    color="#d62728",
                )
        for m in tl.marks:
            if m.kind in _ROLLOUT_KINDS and m.line in (line, ""):
                ax.axvline(m.t, color="#555555", linestyle=":", linewidth=0.9)
                ax.text(
                    m.t,
                    0.02,
                    _short(m.text),
                    transform=ax.get_xaxis_transform(),
                    rotation=90,
                    fontsize=6,
                    va="bottom",
                    ha="right",
                    color="#555555",
                )
        _redesign(ax, tl, label=False)
        ax.set_ylim(0, 110)
        ax.set_ylabel("canary weight (%)")
        ax.set_title(line, fontsize=10)
    return _Section(title, caption, _save(fig, out_dir, ROLLOUT_PNG))


# ---------------------------------------------------------------------------------------------
# HTML

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.7em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.met { color: #1a7f37; font-weight: bold; }
.unmet { color: #cf222e; font-weight: bold; }
.bad { color: #cf222e; font-weight: bold; }
figure { margin: 1.5em 0; }
figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption, .note { color: #555; font-size: 0.9em; }
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _dash(value: object) -> str:
    return "—" if value is None else str(value)


def _headline_html(tl: Timeline) -> str:
    h = tl.headline
    if h is None:
        return '<p class="note">No headline figures: the run did not record them.</p>'
    computed = goals_met(h)
    # The recorded verdicts win (they are what the run printed); missing ones are computed here.
    verdicts = {**computed, **h.goals}
    line = tl.redesign_line or "the redesigned line"
    rows = [
        (
            f"Inspections on {line} from the redesign until it left auto",
            _dash(h.inspections_until_detection),
            f"≤ {GOAL_DETECTION_INSPECTIONS}",
            "detection_within_200_inspections",
        ),
        (
            "Time from the redesign to the new model at 100%",
            _seconds(h.seconds_to_new_model_at_100),
            f"≤ {GOAL_SECONDS_TO_NEW_MODEL:.0f} s ({GOAL_SECONDS_TO_NEW_MODEL / 60:.0f} min)",
            "new_model_at_100_within_15_min",
        ),
        (
            "Escapes during the transition",
            _dash(h.escapes_during_transition),
            f"{GOAL_ESCAPES_DURING_TRANSITION}",
            "zero_escapes_during_transition",
        ),
        (
            "False reject rate after recovery",
            _rate(h.false_reject_rate_after_recovery, h.inspections_after_recovery),
            f"≤ {GOAL_FALSE_REJECT_RATE:.1%}",
            "false_reject_rate_after_recovery_max_0.3pct",
        ),
        ("Human reviews during the run", str(h.human_reviews), "", ""),
    ]
    out = [
        "<table><tr><th>figure</th><th>value</th><th>goal</th><th>verdict</th></tr>",
    ]
    for label, value, goal, key in rows:
        out.append(
            f"<tr><td>{_e(label)}</td><td class='num'>{_e(value)}</td><td>{_e(goal)}</td>"
            f"<td>{_verdict(verdicts.get(key)) if key else ''}</td></tr>"
        )
    # Goals the run recorded that this report does not know still get a row.
    for key in sorted(set(h.goals) - set(GOALS)):
        out.append(
            f"<tr><td>{_e(key)}</td><td></td><td></td><td>{_verdict(h.goals[key])}</td></tr>"
        )
    out.append("</table>")
    out.append(_lines_html(h))
    known = [verdicts.get(k, False) for k in GOALS]
    all_met = all(known) and all(h.goals.values())
    out.append(f"<p>All goals met: {_verdict(all_met, 'yes', 'no')}</p>")
    if not h.completed:
        out.append('<p class="bad">The story did not complete.</p>')
    return "\n".join(out)


def _lines_html(h: Headline) -> str:
    """Every line over the whole run, by mode: what a plant would count."""
    if not h.lines:
        return ""
    out = [
        "<h3>Every line over the whole run</h3>",
        "<table><tr><th>line</th><th>mode</th><th>inspections</th><th>human reviews</th>"
        "<th>false rejects</th><th>escapes</th></tr>",
    ]
    for summary in h.lines:
        for mode in MODES:
            c = summary.by_mode.get(mode, ModeCounts())
            flag = " class='bad'" if mode == "auto" and c.escapes else ""
            out.append(
                f"<tr><td>{_e(summary.line)}</td><td>{mode}</td><td class='num'>{c.inspections}"
                f"</td><td class='num'>{c.reviews}</td><td class='num'>{c.false_rejects}</td>"
                f"<td class='num'{flag}>{c.escapes}</td></tr>"
            )
        final = "" if summary.final_mode == "auto" else " class='bad'"
        out.append(
            f"<tr><td>{_e(summary.line)}</td><td colspan='5'{final}>ends the run in "
            f"{_e(summary.final_mode)}</td></tr>"
        )
    out.append("</table>")
    out.append(
        '<p class="note">Escapes: defective units the line passed with no person looking. '
        "False rejects: good units the model rejected (in guarded and manual mode a person "
        "reviews them).</p>"
    )
    return "\n".join(out)


def _verdict(ok: bool | None, yes: str = "met", no: str = "not met") -> str:
    return f'<span class="met">{yes}</span>' if ok else f'<span class="unmet">{no}</span>'


def _seconds(v: float | None) -> str:
    return "—" if v is None else f"{v:.0f} s ({v / 60:.1f} min)"


def _rate(v: float | None, n: int) -> str:
    return "—" if v is None else f"{v:.2%} of {n:,} inspections"


def _marks_html(marks: Sequence[Mark]) -> str:
    if not marks:
        return '<p class="note">No events were recorded.</p>'
    out = ["<table><tr><th>t (s)</th><th>line</th><th>kind</th><th>event</th></tr>"]
    for m in sorted(marks, key=lambda m: m.t):
        out.append(
            f"<tr><td class='num'>{m.t:.1f}</td><td>{_e(m.line or 'plant')}</td>"
            f"<td>{_e(m.kind)}</td><td>{_e(m.text)}</td></tr>"
        )
    out.append("</table>")
    return "\n".join(out)


def _summary_html(tl: Timeline) -> str:
    items = [f"scenario: {_e(tl.scenario)}"]
    if tl.redesign_at is not None:
        items.append(f"redesign of {_e(tl.redesign_line)} at t = {tl.redesign_at:.1f} s")
    else:
        items.append("no redesign in this run")
    if tl.samples:
        end = max(s.t for s in tl.samples)
        items.append(f"{len(tl.samples)} samples over {end:.0f} s")
        items.append(f"lines: {_e(', '.join(tl.lines()))}")
    else:
        items.append("no samples")
    return "<ul>" + "".join(f"<li>{i}</li>" for i in items) + "</ul>"


def _section_html(s: _Section) -> str:
    head = f"<h3>{_e(s.title)}</h3>"
    if s.image is None:
        return f'{head}\n<p class="note">{_e(s.note)}</p>'
    return (
        f'{head}\n<figure><img src="{_e(s.image)}" alt="{_e(s.title)}">'
        f"<figcaption>{_e(s.caption)}</figcaption></figure>"
    )


def _html(tl: Timeline, sections: Sequence[_Section]) -> str:
    title = f"inspectloop demo: {tl.scenario}"
    body = "\n".join(
        [
            f"<h1>{_e(title)}</h1>",
            _summary_html(tl),
            "<h2>Headline figures</h2>",
            _headline_html(tl),
            "<h2>Plots</h2>",
            *(_section_html(s) for s in sections),
            "<h2>Events</h2>",
            _marks_html(tl.marks),
        ]
    )
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{_e(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n{body}\n"
        "</body>\n</html>\n"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Render a saved timeline again: ``python -m inspectloop.demo.report TIMELINE.json DIR``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2:
        print("usage: python -m inspectloop.demo.report TIMELINE.json OUT_DIR", file=sys.stderr)
        return 2
    print(write_report(Timeline.from_json(Path(args[0])), Path(args[1])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
