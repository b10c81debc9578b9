"""The Prometheus alert rules: valid for promtool, behaving as their unit tests say, and naming
only metrics that a service really exports (a renamed metric breaks this test)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml

from inspectloop.devtools.harness.prometheus import ensure_installed
from tests.integration.exported_metrics import exported_metrics

ROOT = Path(__file__).resolve().parents[2]
RULES = sorted((ROOT / "charts/inspectloop/files/prometheus/rules").glob("*.yaml"))
RULE_TESTS = sorted((ROOT / "tests/prometheus").glob("*.test.yaml"))
METRIC = re.compile(r"\binspectloop_[a-z0-9_]+")


def promtool() -> str:
    return str(Path(ensure_installed()).with_name("promtool"))


def test_rule_files_pass_promtool_check_and_their_unit_tests() -> None:
    assert RULES and RULE_TESTS
    check = subprocess.run(
        [promtool(), "check", "rules", *map(str, RULES)],
        check=False,
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    for test in RULE_TESTS:
        result = subprocess.run(
            [promtool(), "test", "rules", test.name],
            check=False,
            capture_output=True,
            text=True,
            cwd=test.parent,
        )
        assert result.returncode == 0, result.stdout + result.stderr


def test_every_metric_in_the_rules_is_exported_by_a_service() -> None:
    exported = exported_metrics()
    for path in RULES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                used = set(METRIC.findall(rule["expr"]))
                assert used, f"{path.name}: {rule['alert']} uses no inspectloop metric"
                unknown = used - exported
                assert not unknown, f"{path.name}: {rule['alert']} uses {sorted(unknown)}"
