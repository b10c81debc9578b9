"""What each deployable part loads. The edge agent runs on line PCs with onnxruntime only, and the
serving services' replicas should not carry torch (hundreds of MB per process): only the trainer
needs it; no service loads the developer tools (protogen needs grpc_tools, a dev dependency
absent from the image). Each import runs in a fresh interpreter, since this one has imported
everything.

The edge agent's own install (``scripts/setup.sh`` makes it beside this environment, as
``<venv>-edge``: the package without its ``[all]`` extras) runs the edge commands, and the
platform's commands there say which install they need."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("torch", "ray", "tritonclient", "inspectloop.devtools.protogen")
EDGE_VENV = Path(sys.prefix + "-edge")

# module -> the heavy packages it may load
ALLOWED: dict[str, set[str]] = {
    "inspectloop.edge.agent": set(),
    "inspectloop.edge.cli": set(),
    "inspectloop.cli": set(),
    "inspectloop.registry.cli": set(),
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


@pytest.fixture(scope="module")
def edge_bin() -> Path:
    python = EDGE_VENV / "bin" / "python"
    assert python.exists(), f"no edge install at {EDGE_VENV}: run scripts/setup.sh"
    return python.parent


def run_edge(
    edge_bin: Path, *argv: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(edge_bin / argv[0]), *argv[1:]],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={k: v for k, v in os.environ.items() if not k.startswith("INSPECTLOOP_")} | (env or {}),
    )


def test_the_edge_install_has_none_of_the_platforms_packages(edge_bin: Path) -> None:
    for package in ("torch", "ray", "tritonclient", "sqlalchemy", "fastapi", "skimage"):
        result = run_edge(edge_bin, "python", "-c", f"import {package}")
        assert result.returncode == 1 and "ModuleNotFoundError" in result.stderr, package


def test_the_edge_install_runs_the_edge_commands(edge_bin: Path, tmp_path: Path) -> None:
    result = run_edge(
        edge_bin,
        "inspectloop",
        "edge",
        "status",
        env={"INSPECTLOOP_DATA_DIR": str(tmp_path), "INSPECTLOOP_EDGE__LINE": "line-7"},
    )
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert (status["line"], status["current"], status["outbox_depth"]) == ("line-7", None, 0)
    assert (tmp_path / "edge" / "outbox.sqlite3").exists()


def test_the_platforms_commands_name_the_install_they_need(edge_bin: Path) -> None:
    listing = run_edge(edge_bin, "inspectloop", "--help")
    assert listing.returncode == 0, listing.stderr
    assert "(not installed)" in listing.stdout
    result = run_edge(edge_bin, "inspectloop", "registry", "verify-audit")
    assert result.returncode == 2
    assert "needs the package 'sqlalchemy'" in result.stderr
    assert "pip install 'inspectloop[all]'" in result.stderr


# --- who may import whom (read from the source, not by importing) -------------------------------

PACKAGE = Path(__file__).resolve().parents[2] / "services" / "inspectloop"
SERVICES = ("gateway", "edge", "monitor", "trainer", "registry", "rollout")
# Shared layers every service builds on; they import no service.
SHARED = ("core", "inspection", "v1")
# What composes the services (the demo's plants) and the developer tools may import anything;
# the simulator is the plant's stand-in and only they may use it.
COMPOSERS = ("demo", "devtools")


def _imported_modules(path: Path) -> set[str]:
    import ast  # noqa: PLC0415

    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def _area(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "inspectloop" else None


def _imports_by_area() -> dict[str, set[tuple[str, str]]]:
    """area -> {(file, imported area)} for every file of the package."""
    result: dict[str, set[tuple[str, str]]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE)
        area = relative.parts[0] if len(relative.parts) > 1 else relative.stem
        for module in _imported_modules(path):
            imported = _area(module)
            if imported is not None:
                result.setdefault(area, set()).add((str(relative), imported))
    return result


def test_no_service_imports_another_service() -> None:
    offending = sorted(
        f"{file} imports inspectloop.{imported}"
        for area, edges in _imports_by_area().items()
        if area in SERVICES
        for file, imported in edges
        if imported in SERVICES and imported != area
    )
    assert not offending, offending


def test_the_shared_layers_import_no_service() -> None:
    offending = sorted(
        f"{file} imports inspectloop.{imported}"
        for area, edges in _imports_by_area().items()
        if area in SHARED
        for file, imported in edges
        if imported not in SHARED
    )
    assert not offending, offending


def test_production_code_never_imports_the_simulator() -> None:
    # The simulator is how tests, benchmarks and the demo stand in for a plant; a service that
    # used it would work only on the simulator's own designs.
    offending = sorted(
        f"{file} imports inspectloop.simulator"
        for area, edges in _imports_by_area().items()
        if area not in (*COMPOSERS, "simulator", "cli")
        for file, imported in edges
        if imported == "simulator"
    )
    assert not offending, offending


def test_nothing_in_the_package_imports_the_tests_or_benchmarks() -> None:
    # The independent label generator of tests/foreign must stay out of production's reach.
    offending = sorted(
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if {m.split(".")[0] for m in _imported_modules(path)} & {"tests", "benchmarks"}
    )
    assert not offending, offending


def test_the_boundary_check_sees_an_import() -> None:
    # The checks above can fail: the demo does import the services and the simulator.
    demo = _imports_by_area()["demo"]
    assert {imported for _, imported in demo} >= {"gateway", "trainer", "simulator"}
