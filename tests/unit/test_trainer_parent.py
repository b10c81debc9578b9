"""The parent a retraining fine-tunes: its architecture comes from its lineage, or (versions
registered before the trainer recorded it) from whether its weights fit the configured one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from inspectloop.trainer.model import ModelSpec, build_model
from inspectloop.trainer.service import parent_spec

CONFIGURED = ModelSpec(input_size=32, width_multiplier=0.5, embedding_dim=16)
WIDER = ModelSpec(input_size=32, width_multiplier=0.75, embedding_dim=16)


def weights(spec: ModelSpec, path: Path) -> Path:
    torch.save(build_model(spec, seed=0).state_dict(), path)
    return path


def record(spec: ModelSpec | None) -> dict[str, Any]:
    config = {"epochs": 3} if spec is None else {"epochs": 3, "model_spec": spec.to_dict()}
    # As the registry hands it back: through JSON.
    handed_back: dict[str, Any] = json.loads(
        json.dumps({"version": 4, "lineage": {"training_config": config}})
    )
    return handed_back


def test_the_recorded_architecture_is_the_parents(tmp_path: Path) -> None:
    wide = weights(WIDER, tmp_path / "wide.pt")
    assert parent_spec(record(WIDER), wide, CONFIGURED) == WIDER
    assert parent_spec(
        record(CONFIGURED), weights(CONFIGURED, tmp_path / "same.pt"), CONFIGURED
    ) == (CONFIGURED)


def test_without_a_record_the_weights_decide(tmp_path: Path) -> None:
    assert parent_spec(record(None), weights(CONFIGURED, tmp_path / "a.pt"), CONFIGURED) == (
        CONFIGURED
    )
    # Another width: the tensors do not fit, the architecture is unknown (train from scratch).
    assert parent_spec(record(None), weights(WIDER, tmp_path / "b.pt"), CONFIGURED) is None
    assert parent_spec({"version": 1}, weights(WIDER, tmp_path / "c.pt"), CONFIGURED) is None
