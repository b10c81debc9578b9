"""What each deployable part loads. The edge agent runs on line PCs with onnxruntime only, and the
serving services' replicas should not carry torch (hundreds of MB per process): only the trainer
needs it. Each import runs in a fresh interpreter, since this one has imported everything."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("torch", "ray", "tritonclient")

# module -> the heavy packages it may load
ALLOWED: dict[str, set[str]] = {
    "inspectloop.edge.agent": set(),
    "inspectloop.edge.cli": set(),
    "inspectloop.cli": set(),
    "inspectloop.registry.api": set(),
    "inspectloop.monitor.service": set(),
    "inspectloop.rollout.service": set(),
    "inspectloop.gateway.app": {"ray", "tritonclient"},
    "inspectloop.gateway.service": {"tritonclient"},
}


def heavy_packages_loaded_by(module: str) -> set[str]:
    probe = (
        "import importlib, json, sys\n"
        f"importlib.import_module({module!r})\n"
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, f"importing {module} failed:\n{result.stderr}"
    return set(json.loads(result.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize("module", sorted(ALLOWED))
def test_serving_parts_do_not_load_the_trainers_packages(module: str) -> None:
    loaded = heavy_packages_loaded_by(module)
    assert loaded <= ALLOWED[module], f"{module} loads {sorted(loaded - ALLOWED[module])}"


def test_the_probe_sees_a_heavy_import() -> None:
    # The check above can fail: the trainer's packaging does load torch.
    assert "torch" in heavy_packages_loaded_by("inspectloop.trainer.packaging")
