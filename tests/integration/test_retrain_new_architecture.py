"""A retraining after the model's architecture changed in settings (another width): the parent's
weights do not fit, so the trainer trains from scratch, still judges the golden set against the
parent (with the parent's own architecture), and records the architecture; the next retraining
fine-tunes from that version. Real registry process, real Ray Train."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from inspectloop.core.onnx_contract import sha256_file
from inspectloop.core.registry_client import RegistryClient
from inspectloop.core.topics import MODELS
from inspectloop.devtools.registry_process import RegistryUser, registry_process
from inspectloop.simulator.dataset import DatasetSpec, write_dataset
from inspectloop.trainer.gates import GateSettings
from inspectloop.trainer.model import ModelSpec, build_model
from inspectloop.trainer.settings import TrainerSection
from inspectloop.v1.common_pb2 import Scope
from inspectloop.v1.monitor_pb2 import RETRAIN_REASON_MANUAL, RetrainRequest
from tests.conftest import TrainerFactory

pytestmark = pytest.mark.integration

SIZE = 32
NAME = "arch-inspector"
TOKEN = "ilr_" + "a" * 40
OLD = ModelSpec(input_size=SIZE, width_multiplier=0.25)
NEW = ModelSpec(input_size=SIZE, width_multiplier=0.5)


def register_old_parent(registry: RegistryClient, work: Path) -> None:
    """Version 1, validated, trained at the old width (its lineage records it)."""
    weights = work / "v1.pt"
    torch.save(build_model(OLD, seed=3).state_dict(), weights)
    sha = sha256_file(weights)
    registry.upload_artifact(weights, sha)
    registry.register_version(
        NAME,
        {
            "stage": "validated",
            "artifacts": [
                {
                    "kind": "checkpoint",
                    "sha256": sha,
                    "size_bytes": weights.stat().st_size,
                    "filename": "model.pt",
                }
            ],
            "lineage": {
                "dataset_snapshot_id": "snap-old",
                "dataset_sha256": "d" * 64,
                "code_version": "test",
                "training_config": {"epochs": 1, "model_spec": OLD.to_dict()},
            },
            "classes": list(OLD.classes),
            "input_width": SIZE,
            "input_height": SIZE,
        },
    )


def test_a_new_width_trains_from_scratch_then_fine_tunes(
    make_trainer: TrainerFactory, tmp_path: Path
) -> None:
    reference = tmp_path / "reference"
    write_dataset(DatasetSpec(n=240, seed=4, size=SIZE, golden_per_class=1), reference)
    with registry_process(
        tmp_path / "registry", [RegistryUser("trainer", "service", TOKEN)]
    ) as url:
        registry = RegistryClient(url, TOKEN)
        register_old_parent(registry, tmp_path)
        settings = TrainerSection(
            model_name=NAME,
            num_workers=2,
            epochs=2,
            fine_tune_epochs=1,
            image_size=SIZE,
            width_multiplier=NEW.width_multiplier,
            reference_datasets=(reference,),
            golden_dataset=reference,
            registry_url=url,
            work_dir=tmp_path / "trainer",
            # Judged on tiny data: every gate loose but the golden set's, which must be judged.
            gates=GateSettings(
                min_accuracy=0.0,
                min_recall_per_class=0.0,
                max_false_reject_rate=1.0,
                max_escape_rate=1.0,
                max_golden_regressions=1000,
                latency_runs=10,
            ),
        )
        trainer = make_trainer(settings, registry)
        trainer.bus.ensure_topics([MODELS])
        service = trainer.service

        def retrain(request_id: str) -> dict[str, Any]:
            request = RetrainRequest(
                request_id=request_id,
                reason=RETRAIN_REASON_MANUAL,
                requested_by="test",
                scope=Scope(lines=["line-1"]),
            )
            trained = service.retrain(request)
            assert trained.stage == "validated"
            return registry.version(NAME, trained.version)

        try:
            # Version 1 is 0.25 wide, the settings say 0.5: from scratch (the full epochs).
            second = retrain("req-new-width")
            lineage = second["lineage"]
            assert lineage["parent_version"] == 1
            assert lineage["training_config"]["fine_tuned"] is False
            assert lineage["training_config"]["epochs"] == settings.epochs
            assert ModelSpec.from_dict(lineage["training_config"]["model_spec"]) == NEW
            golden = next(g for g in second["gate_results"] if g["gate"] == "golden_set")
            assert "against the parent's" in golden["detail"]  # compared with version 1

            # Version 2 has the configured width: the next retraining fine-tunes from it.
            third = retrain("req-same-width")
            lineage = third["lineage"]
            assert lineage["parent_version"] == 2
            assert lineage["training_config"]["fine_tuned"] is True
            assert lineage["training_config"]["epochs"] == settings.fine_tune_epochs
        finally:
            registry.close()
