"""What the story prints while it runs: lines from many threads, and one live progress bar.

On a terminal the bar is the last line, redrawn in place and cleared before any other line is
printed, so the timeline scrolls above it. Elsewhere (a log, CI) it prints a line at each tenth
of the way and at the end instead, so a captured run still shows progress without thousands of
redraws.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable

BAR_WIDTH = 28


def progress_bar(label: str, fraction: float, detail: str, eta_s: float | None) -> str:
    """``label [#########.........]  34%  detail  ETA 1m20s``."""
    fraction = min(max(fraction, 0.0), 1.0)
    filled = round(fraction * BAR_WIDTH)
    eta = f"  ETA {_duration(eta_s)}" if eta_s is not None and eta_s != float("inf") else ""
    return f"{label} [{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {fraction:4.0%}  {detail}{eta}"


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    minutes, secs = divmod(seconds, 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class Terminal:
    """Thread-safe printing with one optional progress bar."""

    def __init__(self, echo: Callable[[str], None], *, live: bool | None = None) -> None:
        self._echo = echo
        self._live = sys.stdout.isatty() if live is None else live
        self._lock = threading.Lock()
        self._bar = ""  # the bar being shown (live) or the last one printed
        self._tenth = -1

    def echo(self, text: str) -> None:
        with self._lock:
            if self._live and self._bar:
                sys.stdout.write("\r\x1b[K")
            self._echo(text)
            if self._live and self._bar:
                sys.stdout.write(self._bar)
                sys.stdout.flush()

    def progress(self, text: str, fraction: float) -> None:
        """Show (or update) the bar ``text``, which is ``fraction`` of the way."""
        with self._lock:
            if self._live:
                sys.stdout.write("\r\x1b[K" + text)
                sys.stdout.flush()
                self._bar = text
                return
            tenth = int(min(max(fraction, 0.0), 1.0) * 10)
            if tenth > self._tenth:
                self._tenth = tenth
                self._echo(text)

    def done(self, final: str | None = None) -> None:
        """Remove the bar (printing ``final`` in its place, if given)."""
        with self._lock:
            if self._live and self._bar:
                sys.stdout.write("\r\x1b[K")
                sys.stdout.flush()
            self._bar = ""
            self._tenth = -1
            if final:
                self._echo(final)
