"""Training on real Ray: DDP with two workers, a worker killed mid-run, and the cluster path
through Ray's job submission API against a head started with ``ray start --head``."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
import torch

from inspectloop.devtools.harness.ray_head import RayHead
from inspectloop.simulator.dataset import DatasetSpec, write_dataset
from inspectloop.trainer.model import ModelSpec, build_model
from inspectloop.trainer.ray_loop import TrainingConfig, TrainingResult
from inspectloop.trainer.runner import JobSubmissionRunner, LocalRayRunner

pytestmark = pytest.mark.integration

SIZE = 64


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("training") / "dataset"
    write_dataset(DatasetSpec(n=360, seed=5, size=SIZE, golden_per_class=0), root)
    return root


def config(dataset: Path, tmp: Path, epochs: int, **extra: object) -> TrainingConfig:
    return TrainingConfig(
        dataset_dir=str(dataset),
        spec=ModelSpec(input_size=SIZE, width_multiplier=0.5).to_dict(),
        epochs=epochs,
        lr=4e-3,
        batch_size=32,
        seed=3,
        num_workers=2,
        storage_path=str(tmp / "results"),
        run_name=f"run-{time.monotonic_ns()}",
        **extra,  # type: ignore[arg-type]
    )


def wait_for(path: Path, predicate: object, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            text = path.read_text()
            if text and predicate(text):  # type: ignore[operator]
                return text
        time.sleep(0.1)
    raise AssertionError(f"{path} not ready within {timeout}s")


def test_a_worker_killed_mid_training_resumes_from_the_checkpoint(
    local_ray: LocalRayRunner, small_dataset: Path, tmp_path: Path
) -> None:
    progress = tmp_path / "progress"
    # Enough epochs that the run is still going when the worker is killed after its first.
    cfg = config(small_dataset, tmp_path, epochs=20, max_failures=2, progress_dir=str(progress))
    outcome: dict[str, TrainingResult | BaseException] = {}

    def train() -> None:
        try:
            outcome["result"] = local_ray.run(cfg, tmp_path)
        except BaseException as exc:  # reported to the test thread below
            outcome["error"] = exc

    thread = threading.Thread(target=train)
    thread.start()
    # Once Ray Train has registered a checkpoint (its controller records it in the snapshot
    # file), kill rank 1: the restarted group must resume from that checkpoint.
    snapshot = Path(cfg.storage_path) / cfg.run_name / "checkpoint_manager_snapshot.json"
    wait_for(snapshot, lambda t: bool(json.loads(t)["checkpoint_results"]), timeout=300)
    victim = int((progress / "worker-1.pid").read_text())
    os.kill(victim, signal.SIGKILL)
    thread.join(timeout=600)
    assert not thread.is_alive()
    assert "error" not in outcome, outcome.get("error")
    result = outcome["result"]
    assert isinstance(result, TrainingResult)
    assert result.metrics["epoch"] == 20
    assert result.resumed and result.metrics["resumed_from_epoch"] >= 1
    # The restarted workers are new processes: the killed one never came back.
    assert int((progress / "worker-1.pid").read_text()) != victim
    # The weights handed back are the trained ones: they load into the plain module.
    model = build_model(ModelSpec.from_dict(cfg.spec))
    model.load_state_dict(torch.load(result.weights_path, weights_only=True))
    first = json.loads(snapshot.read_text())["checkpoint_results"][0]["metrics"]
    assert result.metrics["train_loss"] < first["train_loss"]


def test_training_runs_as_a_job_on_a_ray_cluster(small_dataset: Path, tmp_path: Path) -> None:
    with RayHead(tmp_path / "head", num_cpus=2) as head:
        runner = JobSubmissionRunner(head.dashboard_url, head.auth_token, timeout_s=600)
        result = runner.run(config(small_dataset, tmp_path, epochs=2), tmp_path / "job")
    assert result.metrics["epoch"] == 2
    assert result.weights_path.exists()
    state = torch.load(result.weights_path, weights_only=True)
    assert not any(k.startswith("module.") for k in state)  # plain module weights
