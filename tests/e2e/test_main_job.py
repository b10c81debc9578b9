"""The README's main job as a newcomer runs it: ``bash scripts/demo.sh`` (which passes its
arguments to ``inspectloop demo``) and the ``inspectloop`` console script with its defaults,
from a working directory that is not the repository."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1500)]

REPOSITORY = Path(__file__).resolve().parents[2]
CONSOLE_SCRIPT = Path(sys.executable).with_name("inspectloop")


def _environment() -> dict[str, str]:
    # A newcomer's shell: no settings of ours, only the cache the set-up filled.
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("INSPECTLOOP_") or k in ("INSPECTLOOP_CACHE_DIR", "INSPECTLOOP_VENV")
    }


def test_demo_sh_passes_its_arguments_to_the_demo(tmp_path: Path) -> None:
    result = subprocess.run(
        ["bash", str(REPOSITORY / "scripts" / "demo.sh"), "--help"],
        cwd=tmp_path,
        env=_environment(),
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for option in ("--work-dir", "--until", "--timeout-s"):
        assert option in result.stdout, result.stdout
    assert "setup: ready for: bash scripts/demo.sh" in result.stderr


def test_the_demo_runs_with_its_defaults_from_another_directory(tmp_path: Path) -> None:
    # The default --work-dir is relative (.inspectloop/demo): every service and component the
    # demo starts must find it, Triton included, which runs in a directory of its own.
    result = subprocess.run(
        [str(CONSOLE_SCRIPT), "demo", "--until", "first-model", "--timeout-s", "1200"],
        cwd=tmp_path,
        env=_environment(),
        capture_output=True,
        text=True,
        timeout=1400,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-5000:]
    assert "serves line-1, line-2: stopping here" in result.stdout, output[-5000:]
    work = tmp_path / ".inspectloop" / "demo"
    timeline = json.loads((work / "timeline.json").read_text(encoding="utf-8"))
    rollouts = [m["text"] for m in timeline["marks"] if m["kind"] == "rollout"]
    assert any(text.startswith("v1 production") for text in rollouts), rollouts
    assert (work / "report" / "index.html").exists()
    # The training showed its progress (a line per tenth when not on a terminal).
    assert "training [" in result.stdout and "epoch" in result.stdout, result.stdout[-3000:]
