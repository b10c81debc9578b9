"""Simulator streams turned into the InspectionEvents a gateway publishes, by a real model.

For the monitor's tests and ``benchmarks/drift.py``. A small InspectionCNN is trained on design
A (64-pixel renders, so that they stay quick); streams of labels are rendered with the simulator
(design A, the redesign B, design A under lighting drift, or a scenario file's line as it
changes over time) and inspected by that model: decision, confidence, the model's feature
vector and the image statistics, exactly the fields the monitor reads.
"""

from __future__ import annotations

import uuid
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch

from inspectloop.core.imagestats import image_stats
from inspectloop.simulator.dataset import DatasetSpec, plan, product_skus, render_item
from inspectloop.simulator.line import render_unit
from inspectloop.simulator.scenario import Scenario
from inspectloop.trainer.data import Augment, ImageSet, InspectionDataset
from inspectloop.trainer.fit import fit
from inspectloop.trainer.model import InspectionCNN, ModelSpec, build_model
from inspectloop.v1.common_pb2 import DECISION_PASS, DECISION_REJECT, MODEL_ROLE_STABLE
from inspectloop.v1.inspection_pb2 import InspectionEvent

SIZE = 64
SKU = product_skus("label")[0]
MODEL_NAME = "label-inspector"


@dataclass(frozen=True)
class Rendered:
    images: npt.NDArray[np.uint8]
    labels: list[str]
    skus: list[str] | None = None  # per image; None: all of ``SKU``


def _render_one(item: object) -> tuple[npt.NDArray[np.uint8], str]:
    image, _ = render_item(item)  # type: ignore[arg-type]
    return image, item.label  # type: ignore[attr-defined]


def render_stream(
    design: str,
    n: int,
    seed: int,
    *,
    defect_fraction: float = 0.03,
    lighting_drift: float = 0.0,
    workers: int = 2,
    skus: tuple[str, ...] = (SKU,),
) -> Rendered:
    """``n`` labels of ``skus`` as a line would see them, in a random order."""
    spec = DatasetSpec(
        product="label",
        design=design,
        n=n,
        seed=seed,
        size=SIZE,
        skus=skus,
        defect_fraction=defect_fraction,
        lighting_drift=lighting_drift,
        splits=(("test", 1.0),),
        golden_per_class=0,
    )
    items = [i for i in plan(spec) if i.split == "test"]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        rendered = list(pool.map(_render_one, items, chunksize=64))
    return Rendered(np.stack([r[0] for r in rendered]), [r[1] for r in rendered])


def _render_unit(job: tuple[Scenario, int, int, float]) -> tuple[npt.NDArray[np.uint8], str, str]:
    unit = render_unit(*job, size=SIZE)
    return unit.image, unit.defect_class, unit.state.sku


def render_scenario_line(
    scenario: Scenario, line_index: int, units: list[tuple[int, float]], workers: int = 2
) -> Rendered:
    """The units ``(index, t seconds)`` of one of a scenario's lines, as its camera sees them
    at those times (the scenario's changes applied), at the models' ``SIZE``."""
    jobs = [(scenario, line_index, index, t) for index, t in units]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        rendered = list(pool.map(_render_unit, jobs, chunksize=64))
    return Rendered(
        np.stack([r[0] for r in rendered]), [r[1] for r in rendered], [r[2] for r in rendered]
    )


def train_design_a_model(seed: int = 0, skus: tuple[str, ...] = (SKU,)) -> InspectionCNN:
    """A small model that knows design A: a few epochs with the trainer's augmentation (light
    and colour temperature among it), good enough to pass design A under drifted light and to
    be confidently wrong on the redesign, which is what the monitor must tell apart."""
    spec = ModelSpec(input_size=SIZE, width_multiplier=0.5)
    data = render_stream("A", 3000, seed + 100, defect_fraction=0.5, skus=skus)
    classes = spec.classes
    images = ImageSet(
        data.images, np.array([classes.index(c) for c in data.labels], dtype=np.int64), classes
    )
    torch.set_num_threads(2)
    model = build_model(spec, seed=seed)
    fit(
        model,
        InspectionDataset(images, spec.preprocess, Augment()),
        None,
        epochs=5,
        lr=4e-3,
        seed=seed,
    )
    model.eval()
    return model


def inspect(
    model: InspectionCNN, rendered: Rendered, line: str, design: str, version: str = "1"
) -> list[InspectionEvent]:
    """The InspectionEvents of ``rendered`` decided by ``model`` (stable role)."""
    spec = model.spec
    events = []
    with torch.inference_mode():
        for start in range(0, len(rendered.images), 512):
            batch = rendered.images[start : start + 512]
            logits, features = model.forward_with_features(spec.preprocess(batch))
            probabilities = torch.softmax(logits, dim=1).numpy()
            for k, image in enumerate(batch):
                top = int(probabilities[k].argmax())
                event = InspectionEvent(
                    inspection_id=str(uuid.uuid4()),
                    request_id=str(uuid.uuid4()),
                    line=line,
                    sku=rendered.skus[start + k] if rendered.skus else SKU,
                    label_design=design,
                    decision=DECISION_PASS if spec.classes[top] == "good" else DECISION_REJECT,
                    feature_vector=features[k].tolist(),
                    image_stats=image_stats(image),
                )
                event.model.name = MODEL_NAME
                event.model.version = version
                event.model.role = MODEL_ROLE_STABLE
                event.prediction.top_class = spec.classes[top]
                event.prediction.confidence = float(probabilities[k, top])
                event.image.uri = f"blob://sha256/{event.inspection_id}"
                events.append(event)
    return events
