"""The demo's timeline (JSON round trip, goals) and its HTML/PNG report."""

from __future__ import annotations

import math
from html.parser import HTMLParser
from pathlib import Path

import pytest

from inspectloop.demo import report
from inspectloop.demo.report import write_report
from inspectloop.demo.timeline import (
    GOALS,
    Headline,
    LineSummary,
    Mark,
    ModeCounts,
    Sample,
    Timeline,
    goals_met,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
NASTY = '<script>alert("x")</script> & <b>bold</b>'


def _synthetic() -> Timeline:
    """Two lines every 5 s; line-1 redesigned at 100, manual at 110, canary, promoted at 400."""
    samples: list[Sample] = []
    counters = {"line-1": [0, 0, 0, 0], "line-2": [0, 0, 0, 0]}  # insp, reviews, fr, esc
    for step in range(0, 121):
        t = step * 5.0
        for line, c in counters.items():
            c[0] += 10
            redesigned = line == "line-1" and t >= 100
            manual = line == "line-1" and 110 <= t < 405
            if manual:
                c[1] += 10  # every image to a human
            elif redesigned and t < 110:
                c[2] += 3  # the old model rejects the new label before detection
            elif step % 10 == 0:
                c[2] += 1
            stable = "v2" if line == "line-1" and t >= 400 else "v1"
            canary = "v2" if line == "line-1" and 300 <= t < 400 else ""
            weight = (0.1 if t < 350 else 0.5) if canary else 0.0
            drifting = line == "line-1" and 100 <= t < 400
            samples.append(
                Sample(
                    t=t,
                    line=line,
                    mode="manual" if manual else "auto",
                    stable_version=stable,
                    canary_version=canary,
                    canary_weight=weight,
                    drift_statistic={"mmd": 40.0 if drifting else 0.2, "page_hinkley": 0.5},
                    drift_threshold={"mmd": 1.0, "page_hinkley": 2.0},
                    inspections=c[0],
                    reviews=c[1],
                    false_rejects=c[2],
                    escapes=c[3],
                )
            )
    marks = [
        Mark(100.0, "line-1", "redesign", "label redesign on line-1"),
        Mark(110.0, "line-1", "alert", "mmd 40.0 > 1.0"),
        Mark(110.0, "line-1", "mode", "auto -> manual"),
        Mark(111.0, "line-1", "retrain_request", "retrain line-1 with 120 labelled images"),
        Mark(280.0, "line-1", "model_version", "v2 validated"),
        Mark(300.0, "line-1", "rollout", "canary 10%"),
        Mark(350.0, "line-1", "rollout", "canary 50%"),
        Mark(400.0, "line-1", "rollout", "promoted v2"),
        Mark(405.0, "line-1", "mode", "manual -> auto"),
        Mark(420.0, "", "routing", NASTY),
    ]
    headline = Headline(
        inspections_until_detection=20,
        seconds_to_new_model_at_100=300.0,
        escapes_during_transition=0,
        false_reject_rate_after_recovery=0.001,
        inspections_after_recovery=400,
        human_reviews=590,
        lines=[
            LineSummary("line-1", "auto", {"auto": ModeCounts(600, 3, 1, 0)}),
            LineSummary("line-2", "auto", {"auto": ModeCounts(1210, 5, 2, 0)}),
        ],
        completed=True,
    )
    headline.goals = goals_met(headline)
    return Timeline(
        scenario="label redesign",
        redesign_line="line-1",
        redesign_at=100.0,
        samples=samples,
        marks=marks,
        headline=headline,
    )


class _Parser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            src = dict(attrs).get("src")
            assert src, "an <img> without src"
            self.images.append(src)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _parse(index: Path) -> _Parser:
    p = _Parser()
    p.feed(index.read_text(encoding="utf-8"))
    return p


def _assert_pngs(index: Path, images: list[str]) -> None:
    for src in images:
        assert "/" not in src and ":" not in src, f"{src} is not a local file beside index.html"
        data = (index.parent / src).read_bytes()
        assert data.startswith(PNG_SIGNATURE), f"{src} is not a PNG"
        assert len(data) > 1000


def test_json_round_trip(tmp_path: Path) -> None:
    tl = _synthetic()
    path = tmp_path / "sub" / "timeline.json"
    tl.to_json(path)
    back = Timeline.from_json(path)
    assert back == tl
    assert back.headline is not None and back.headline.goals == goals_met(back.headline)
    assert not list(path.parent.glob("*.tmp"))

    empty = Timeline(scenario="none")
    empty.to_json(path)
    assert Timeline.from_json(path) == empty


def test_from_json_refuses_unknown_format(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    path.write_text('{"format": 99, "scenario": "x"}', encoding="utf-8")
    with pytest.raises(ValueError, match="format 99"):
        Timeline.from_json(path)


def _headline(**changes: object) -> Headline:
    h = Headline(
        inspections_until_detection=200,
        seconds_to_new_model_at_100=900.0,
        escapes_during_transition=0,
        false_reject_rate_after_recovery=0.003,
        inspections_after_recovery=1000,
        human_reviews=300,
        lines=[
            LineSummary(
                "line-1",
                "auto",
                {"auto": ModeCounts(900, 9, 2, 0), "manual": ModeCounts(300, 300, 0, 0)},
            )
        ],
    )
    for k, v in changes.items():
        setattr(h, k, v)
    return h


def test_goals_met_at_the_limits() -> None:
    goals = goals_met(_headline())
    assert set(goals) == set(GOALS)
    assert all(goals.values())


@pytest.mark.parametrize(
    ("field", "value", "goal"),
    [
        ("inspections_until_detection", 201, "detection_within_200_inspections"),
        ("inspections_until_detection", None, "detection_within_200_inspections"),
        ("escapes_during_transition", 1, "zero_escapes_during_transition"),
        ("escapes_during_transition", None, "zero_escapes_during_transition"),
        ("seconds_to_new_model_at_100", 900.5, "new_model_at_100_within_15_min"),
        ("seconds_to_new_model_at_100", None, "new_model_at_100_within_15_min"),
        ("seconds_to_new_model_at_100", math.nan, "new_model_at_100_within_15_min"),
        ("false_reject_rate_after_recovery", 0.0031, "false_reject_rate_after_recovery_max_0.3pct"),
        ("false_reject_rate_after_recovery", None, "false_reject_rate_after_recovery_max_0.3pct"),
        (
            "false_reject_rate_after_recovery",
            math.nan,
            "false_reject_rate_after_recovery_max_0.3pct",
        ),
    ],
)
def test_goals_unmet(field: str, value: object, goal: str) -> None:
    goals = goals_met(_headline(**{field: value}))
    assert goals[goal] is False
    # Only that goal fails.
    assert [k for k, ok in goals.items() if not ok] == [goal]


def test_a_line_ending_in_manual_or_escaping_in_auto_misses_its_goal() -> None:
    manual = _headline(lines=[LineSummary("line-1", "manual", {"auto": ModeCounts(10, 0, 0, 0)})])
    assert [k for k, ok in goals_met(manual).items() if not ok] == ["every_line_ends_in_auto"]
    # Escapes while manual were reviewed away; one escape in auto misses the goal.
    escaped = _headline(
        lines=[
            LineSummary(
                "line-2",
                "auto",
                {"auto": ModeCounts(4000, 30, 5, 1), "manual": ModeCounts(10, 10, 0, 3)},
            )
        ]
    )
    assert [k for k, ok in goals_met(escaped).items() if not ok] == ["zero_escapes_in_auto"]
    # No line summaries at all is no evidence: both goals are missed.
    assert {k for k, ok in goals_met(_headline(lines=[])).items() if not ok} == {
        "every_line_ends_in_auto",
        "zero_escapes_in_auto",
    }


def test_report_says_which_line_escaped_in_auto_and_how_each_ended(tmp_path: Path) -> None:
    tl = _synthetic()
    assert tl.headline is not None
    tl.headline.lines[1] = LineSummary(
        "line-2", "manual", {"auto": ModeCounts(1200, 5, 2, 12), "manual": ModeCounts(10, 10, 0, 0)}
    )
    tl.headline.completed = False
    tl.headline.goals = goals_met(tl.headline)
    text = " ".join(_parse(write_report(tl, tmp_path / "r")).text)
    assert "ends the run in manual" in text
    assert "The story did not complete." in text
    assert "All goals met:" in text and "All goals met: yes" not in text


def test_report_writes_html_and_every_png(tmp_path: Path) -> None:
    index = write_report(_synthetic(), tmp_path / "report")
    assert index == tmp_path / "report" / "index.html"
    parsed = _parse(index)
    assert sorted(parsed.images) == sorted(report.ALL_PNGS)
    _assert_pngs(index, parsed.images)
    text = " ".join(parsed.text)
    assert "inspectloop demo: label redesign" in text
    assert "All goals met:" in text and "yes" in text
    assert "not met" not in text
    assert "300 s (5.0 min)" in text
    assert "0.10% of 400 inspections" in text


def test_report_is_deterministic(tmp_path: Path) -> None:
    tl = _synthetic()
    a = write_report(tl, tmp_path / "a").parent
    b = write_report(tl, tmp_path / "b").parent
    for name in ["index.html", *report.ALL_PNGS]:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_report_escapes_marks_and_shows_unmet_goals(tmp_path: Path) -> None:
    tl = _synthetic()
    tl.scenario = "<i>redesign</i>"
    assert tl.headline is not None
    tl.headline.escapes_during_transition = 2
    tl.headline.goals = goals_met(tl.headline)
    raw = write_report(tl, tmp_path).read_text(encoding="utf-8")
    assert "<script>" not in raw and "<b>bold</b>" not in raw and "<i>redesign" not in raw
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &lt;b&gt;bold&lt;/b&gt;" in raw
    assert "&lt;i&gt;redesign&lt;/i&gt;" in raw
    text = " ".join(_parse(tmp_path / "index.html").text)
    assert NASTY in text  # the reader sees the text as it was written
    assert text.count("not met") == 1
    assert "All goals met: no" in " ".join(text.split())


def test_report_without_redesign_headline_or_samples(tmp_path: Path) -> None:
    index = write_report(Timeline(scenario="empty"), tmp_path)
    parsed = _parse(index)
    assert parsed.images == []
    text = " ".join(parsed.text)
    assert "No headline figures" in text
    assert "no redesign in this run" in text
    assert "No events were recorded." in text
    assert not list(tmp_path.glob("*.png"))


def test_report_without_drift_data_drops_only_that_plot(tmp_path: Path) -> None:
    tl = _synthetic()
    (tmp_path / report.DRIFT_PNG).write_bytes(PNG_SIGNATURE)  # a stale file from an earlier run
    tl.redesign_line, tl.redesign_at, tl.headline = "", None, None
    for s in tl.samples:
        s.drift_statistic, s.drift_threshold = {}, {}
    index = write_report(tl, tmp_path)
    parsed = _parse(index)
    assert report.DRIFT_PNG not in parsed.images
    assert sorted(parsed.images) == sorted(set(report.ALL_PNGS) - {report.DRIFT_PNG})
    _assert_pngs(index, parsed.images)
    assert not (tmp_path / report.DRIFT_PNG).exists()
    assert "No drift statistics were recorded" in " ".join(parsed.text)


def test_windowed_rates_from_cumulative_counters() -> None:
    def s(t: float, insp: int, fr: int) -> Sample:
        return Sample(t, "l", "auto", "v1", "", 0.0, {}, {}, insp, 0, fr, 0)

    # 1% false rejects throughout, then the counter restarts (a gap, not a rate).
    samples = [s(5.0 * i, 100 * i, i) for i in range(8)] + [s(40.0, 10, 0)]
    t, rates = report._windowed(samples, lambda x: x.false_rejects, lambda x: x.inspections, 100.0)
    assert t == [5.0 * i for i in range(1, 8)] + [40.0]
    assert rates[:-1] == pytest.approx([1.0] * 7)
    assert math.isnan(rates[-1])
    # Reviews per minute: 6 reviews every 5 s is 72 per minute.
    rv = [Sample(5.0 * i, "l", "manual", "", "", 0.0, {}, {}, 0, 6 * i, 0, 0) for i in range(4)]
    _, per_min = report._windowed(rv, lambda x: x.reviews, lambda x: x.t, 60.0)
    assert per_min == pytest.approx([72.0] * 3)
