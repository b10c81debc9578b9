"""A label design the platform has never seen, learnt from what a plant really has (issue 24).

The new design ("N") is drawn by ``tests/foreign/labels.py``, a generator that shares nothing
with ``inspectloop.simulator`` and that production code cannot import. The plant has:

- its production model of design A (the committed foundation weights; the trainer only sees a
  weights file, ``trainer.initial_weights``) and its labelled archive of design A (rendered by
  the simulator, the plant's stand-in);
- 200 production images of design N that operators labelled, at 3% defect prevalence,
  published as operator feedback on the bus (images in the blob store);
- a challenge set: 10 real units of every class of design N (the seeded-defect kit), uploaded
  through the registry API;

and a RetrainRequest for design N on the bus. The trainer service (real registry process, the
embedded bus, Ray Train with two workers) trains, judges its gates and registers the version;
the registered ONNX artifact is then scored on 1,000 held-out images of design N (half
defective, every class) under the production decision (classifier and anomaly detector).

Two approaches side by side, on the same data and machine:

- ``today``: what the trainer did for a design its simulator cannot draw: nothing synthesised
  (``synthesise_defects`` returned None), the classifier alone, no distillation from the parent,
  gates at the demo's then lowered 85% accuracy / 20% escape rate;
- ``new``: defects synthesised in image space on the labelled good units, the PatchCore anomaly
  detector, production gates on real held-out images and the challenge set.

Printed per approach: the version's stage and gate failures, escape rate and false reject rate
on the 1,000 held-out images, the time from the request to the registered version, and the mode
the line would run in (``auto`` only for a validated version with no open evidence class).

    python benchmarks/adaptation.py            # the issue's sizes (about 25 minutes on 2 cores)
    python benchmarks/adaptation.py --quick    # CI: smaller training; figures not the goal's
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from prometheus_client import CollectorRegistry

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # tests.foreign: the independent generator

from tests.foreign import labels as foreign  # noqa: E402

from inspectloop.core.blobstore import FilesystemBlobStore  # noqa: E402
from inspectloop.core.bus import build_bus  # noqa: E402
from inspectloop.core.bus.base import DLQ_REASON  # noqa: E402
from inspectloop.core.onnx_contract import (  # noqa: E402
    OUTPUT_ANOMALY_SCORE,
    OUTPUT_PROBABILITIES,
    run_onnx,
)
from inspectloop.core.registry_client import RegistryClient  # noqa: E402
from inspectloop.core.settings import BusSettings, LocalBusSettings  # noqa: E402
from inspectloop.core.topics import FEEDBACK, MODELS, RETRAIN_REQUESTS  # noqa: E402
from inspectloop.devtools.foundation import FOUNDATION_WEIGHTS  # noqa: E402
from inspectloop.devtools.registry_process import RegistryUser, registry_process  # noqa: E402
from inspectloop.simulator.dataset import DatasetSpec, write_dataset  # noqa: E402
from inspectloop.trainer.acceptance import combined_predictions  # noqa: E402
from inspectloop.trainer.gates import GateSettings  # noqa: E402
from inspectloop.trainer.metrics import TrainerMetrics  # noqa: E402
from inspectloop.trainer.runner import LocalRayRunner  # noqa: E402
from inspectloop.trainer.service import TrainerService  # noqa: E402
from inspectloop.trainer.settings import (  # noqa: E402
    AnomalySettings,
    SynthesisSettings,
    TrainerSection,
)
from inspectloop.trainer.snapshot import LabelStore  # noqa: E402
from inspectloop.v1.common_pb2 import ImageRef, Scope  # noqa: E402
from inspectloop.v1.feedback_pb2 import (  # noqa: E402
    FEEDBACK_VERDICT_CONFIRMED_DEFECT,
    FEEDBACK_VERDICT_GOOD_CONFIRMED,
    OperatorFeedback,
)
from inspectloop.v1.models_pb2 import ModelVersion  # noqa: E402
from inspectloop.v1.monitor_pb2 import RETRAIN_REASON_DRIFT, RetrainRequest  # noqa: E402

SERVICE_TOKEN = "ilr_" + "svc0" * 10
QUALITY_TOKEN = "ilr_" + "qa00" * 10
SIZE = 128  # the foundation model's input


@dataclass(frozen=True)
class Scale:
    reference: int = 3000  # the design A archive the fine-tuning replays
    labelled: int = 200
    prevalence: float = 0.03
    challenge_per_class: int = 10
    held_out: int = 1000  # half defective
    fine_tune_epochs: int = 8
    synthesis: SynthesisSettings = field(default_factory=SynthesisSettings)

    @classmethod
    def quick(cls) -> Scale:
        return cls(
            reference=600,
            held_out=300,
            fine_tune_epochs=2,
            synthesis=SynthesisSettings(defective=400, subtle=200, pasted=50, artwork_goods=0),
        )


def _png(image: npt.NDArray[Any]) -> bytes:
    return foreign.encode_png(image)


def _trainer_settings(
    approach: str, scale: Scale, work: Path, reference: Path, registry_url: str
) -> TrainerSection:
    common: dict[str, Any] = {
        "model_name": f"adapt-{approach}",
        "num_workers": 2,
        "batch_size": 32,
        "image_size": SIZE,
        "width_multiplier": 1.0,
        "fine_tune_epochs": scale.fine_tune_epochs,
        "reference_datasets": (reference,),
        "golden_dataset": reference,
        "reference_replay": scale.reference,
        "initial_weights": FOUNDATION_WEIGHTS,
        "registry_url": registry_url,
        "registry_token": SERVICE_TOKEN,
        "work_dir": work / approach,
        "label_wait_s": 120,
    }
    if approach == "today":
        return TrainerSection(
            **common,
            synthesis=SynthesisSettings(defective=0, subtle=0, pasted=0, artwork_goods=0),
            anomaly=AnomalySettings(enabled=False),
            distill_weight=0.0,
            gates=GateSettings(
                min_accuracy=0.85,
                min_recall_per_class=0.2,
                max_false_reject_rate=0.015,
                max_escape_rate=0.2,
                max_golden_regressions=4,
                latency_runs=20,
            ),
        )
    return TrainerSection(**common, synthesis=scale.synthesis, gates=GateSettings(latency_runs=20))


def _feedback(bus: Any, blobs: FilesystemBlobStore, units: list[tuple[Any, str, str]]) -> None:
    """The operators' verdicts on the line's images, as the review station publishes them."""
    for i, (image, label, sku) in enumerate(units):
        data = _png(image)
        blob = blobs.put(data, "image/png")
        bus.publish(
            FEEDBACK,
            OperatorFeedback(
                feedback_id=f"fb-{i}",
                inspection_id=f"insp-{i}",
                line="line-1",
                sku=sku,
                image=ImageRef(sha256=blob.sha256, uri=blob.uri, content_type="image/png"),
                verdict=FEEDBACK_VERDICT_GOOD_CONFIRMED
                if label == "good"
                else FEEDBACK_VERDICT_CONFIRMED_DEFECT,
                defect_class="good" if label == "good" else label,
                operator_id="op-bench",
                label_design=foreign.DESIGN_NAME,
            ),
        )
    bus.flush(60)


def _challenge_kit(directory: Path, per_class: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    for image, label, _ in foreign.balanced_units(rng, per_class, size=SIZE):
        (directory / label).mkdir(parents=True, exist_ok=True)
        n = len(list((directory / label).iterdir()))
        (directory / label / f"{n:03d}.png").write_bytes(_png(image))
    return directory


def _held_out(n: int, seed: int) -> tuple[npt.NDArray[Any], npt.NDArray[Any]]:
    """``n`` images of design N and their classes: half good, the other half every defect
    class evenly."""
    rng = np.random.default_rng(seed)
    defect_classes = foreign.DEFECT_CLASSES[1:]
    per_class = max(1, n // 2 // len(defect_classes))
    units = [u for u in foreign.balanced_units(rng, per_class, size=SIZE) if u[1] != "good"]
    units += [
        (
            foreign.render_unit(rng, "good", foreign.SKUS[i % len(foreign.SKUS)], size=SIZE),
            "good",
            "",
        )
        for i in range(len(units))
    ]
    return np.stack([u[0] for u in units]), np.array([u[1] for u in units])


def _rate(flags: npt.NDArray[Any], measured: bool = True) -> float:
    return float(flags.mean()) if measured else float("nan")


def _score(
    onnx: Path, images: npt.NDArray[Any], classes: npt.NDArray[Any], good_index: int
) -> dict[str, Any]:
    defective = classes != "good"
    out = run_onnx(onnx, images)
    anomaly = out.get(OUTPUT_ANOMALY_SCORE, np.zeros(len(images), np.float32)).reshape(-1)
    probabilities = out[OUTPUT_PROBABILITIES]
    rejected = combined_predictions(probabilities, anomaly, good_index) != good_index
    by_classifier = probabilities.argmax(axis=1) != good_index
    # A version without the detector: its figures are NaN, printed "-".
    by_detector = anomaly >= 1.0
    return {
        "escape_rate": float((~rejected[defective]).mean()),
        "false_reject_rate": float(rejected[~defective].mean()),
        # Which model makes the mistakes: each alone, under the same held-out images.
        "classifier_escape_rate": float((~by_classifier[defective]).mean()),
        "classifier_false_reject_rate": float(by_classifier[~defective].mean()),
        "detector_escape_rate": _rate(~by_detector[defective], OUTPUT_ANOMALY_SCORE in out),
        "detector_false_reject_rate": _rate(by_detector[~defective], OUTPUT_ANOMALY_SCORE in out),
        "escapes_by_class": {
            name: int((~rejected[classes == name]).sum())
            for name in foreign.DEFECT_CLASSES[1:]
            if (~rejected[classes == name]).any()
        },
    }


def run_approach(
    approach: str,
    *,
    scale: Scale,
    work: Path,
    reference: Path,
    registry_url: str,
    units: list[tuple[Any, str, str]],
    held_out: tuple[npt.NDArray[Any], npt.NDArray[Any]],
) -> dict[str, Any]:
    settings = _trainer_settings(approach, scale, work, reference, registry_url)
    bus = build_bus(
        BusSettings(backend="local", local=LocalBusSettings(directory=work / approach / "bus")),
        "adaptation",
        CollectorRegistry(),
    )
    bus.ensure_topics([FEEDBACK, RETRAIN_REQUESTS, MODELS])
    blobs = FilesystemBlobStore(work / approach / "blobs", 1 << 24)
    registry = RegistryClient(registry_url, SERVICE_TOKEN)
    service = TrainerService(
        settings,
        bus=bus,
        blob_store=blobs,
        registry=registry,
        runner=LocalRayRunner(num_cpus=2),
        labels=LabelStore(work / approach / "labels.sqlite3"),
        metrics=TrainerMetrics(CollectorRegistry()),
    )
    stop = threading.Event()
    labels = bus.consumer(f"labels-{approach}", [FEEDBACK], service.handle_feedback)
    threading.Thread(target=labels.run, args=(stop,), daemon=True).start()
    _feedback(bus, blobs, units)
    announced: list[ModelVersion] = []
    retrain = bus.consumer(
        f"trainer-{approach}", [RETRAIN_REQUESTS], service.handle_retrain, long_running=True
    )
    watch = bus.consumer(f"watch-{approach}", [MODELS], lambda e: announced.append(e.message))
    dead_letters = bus.raw_source(f"dlq-{approach}", [RETRAIN_REQUESTS.dlq])
    started = time.monotonic()
    bus.publish(
        RETRAIN_REQUESTS,
        RetrainRequest(
            request_id=f"redesign-{approach}",
            reason=RETRAIN_REASON_DRIFT,
            requested_by="benchmark",
            min_labelled_images=len(units),
            scope=Scope(lines=["line-1"], label_designs=[foreign.DESIGN_NAME]),
        ),
    ).result(30)
    try:
        deadline = time.monotonic() + 3600
        while not announced and time.monotonic() < deadline:
            retrain.poll_once(0.5)
            watch.poll_once(0.1)
            failed = dead_letters.poll(1, 0.0)
            if failed:
                reason = dict(failed[0].headers).get(DLQ_REASON, b"").decode()
                raise RuntimeError(f"{approach}: the retrain request was dead-lettered: {reason}")
        seconds = time.monotonic() - started
        if not announced:
            raise RuntimeError(f"{approach}: no version announced within an hour")
        version = announced[0]
        record = registry.version(settings.model_name, int(version.version))
        onnx = next(a for a in record["artifacts"] if a["kind"] == "onnx")
        path = registry.download_artifact(onnx["sha256"], work / approach / "model.onnx")
        figures = _score(path, *held_out, good_index=list(version.classes).index("good"))
    finally:
        stop.set()
        retrain.close()
        watch.close()
        dead_letters.close()
        registry.close()
    validated = record["stage"] == "validated"
    mode = "manual" if not validated else "guarded" if version.open_evidence_classes else "auto"
    return {
        "approach": approach,
        "stage": record["stage"],
        "failed_gates": [g["gate"] for g in record["gate_results"] if not g["passed"]],
        "open_evidence": list(version.open_evidence_classes),
        "seconds_to_version": seconds,
        "line_mode": mode,
        **figures,
    }


LABELLED_SEED, HELD_OUT_SEED = 24, 2424


def _worker(approach: str, scale: Scale, work: Path, registry_url: str) -> None:
    """One approach, in this process; its figures go to ``work/<approach>.json``."""
    units = foreign.sample_units(
        np.random.default_rng(LABELLED_SEED),
        scale.labelled,
        defect_rate=scale.prevalence,
        size=SIZE,
    )
    held_out = _held_out(scale.held_out, seed=HELD_OUT_SEED)
    try:
        result = run_approach(
            approach,
            scale=scale,
            work=work,
            reference=work / "design-A",
            registry_url=registry_url,
            units=units,
            held_out=held_out,
        )
    except RuntimeError as exc:
        print(f"!! {exc}", flush=True)
        result = _failed(approach, str(exc))
    (work / f"{approach}.json").write_text(json.dumps(result), encoding="utf-8")
    _shutdown_ray()


def _failed(approach: str, reason: str) -> dict[str, Any]:
    nan = float("nan")
    return {
        "approach": approach,
        "stage": "failed",
        "failed_gates": [reason],
        "open_evidence": [],
        "seconds_to_version": nan,
        "line_mode": "manual",
        "escape_rate": nan,
        "false_reject_rate": nan,
        "classifier_escape_rate": nan,
        "classifier_false_reject_rate": nan,
        "detector_escape_rate": nan,
        "detector_false_reject_rate": nan,
        "escapes_by_class": {},
    }


def _shutdown_ray() -> None:
    import ray  # noqa: PLC0415 - started by the trainer's runner

    ray.shutdown()


def _pair(result: dict[str, Any], model: str) -> str:
    """Escapes / false rejects of one model alone ("-": the version has no such model)."""
    if result[f"{model}_escape_rate"] != result[f"{model}_escape_rate"]:  # NaN
        return "-"
    return f"{result[f'{model}_escape_rate']:.1%} / {result[f'{model}_false_reject_rate']:.1%}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller training (CI)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--approach", choices=("today", "new"), action="append", help="only these (default both)"
    )
    parser.add_argument(
        "--keep", type=Path, help="work here (a new folder) and keep the models and data"
    )
    parser.add_argument("--worker", choices=("today", "new"), help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--registry-url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.worker:
        _worker(args.worker, Scale.quick() if args.quick else Scale(), args.work, args.registry_url)
        return
    if not FOUNDATION_WEIGHTS.exists():
        sys.exit(f"{FOUNDATION_WEIGHTS} is missing: inspectloop dev train-foundation makes it")
    scale = Scale.quick() if args.quick else Scale()
    results = []
    with contextlib.ExitStack() as stack:
        if args.keep:
            work = args.keep.resolve()
            work.mkdir(parents=True, exist_ok=False)
        else:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="adaptation-")))
        reference = work / "design-A"
        write_dataset(
            DatasetSpec(n=scale.reference * 2, seed=31, size=SIZE, golden_per_class=4),
            reference,
            workers=2,
        )
        users = [
            RegistryUser("trainer", "service", SERVICE_TOKEN),
            RegistryUser("quality", "quality", QUALITY_TOKEN),
        ]
        with registry_process(work / "registry", users) as url:
            kit = _challenge_kit(work / "kit", scale.challenge_per_class, seed=2425)
            quality = RegistryClient(url, QUALITY_TOKEN)
            quality.upload_dataset(
                kit,
                name="challenge-n",
                kind="challenge",
                label_design=foreign.DESIGN_NAME,
                description="seeded-defect kit of the new design",
            )
            quality.close()
            for approach in args.approach or ("today", "new"):
                # Each approach in its own process: its own Ray, nothing left by the other.
                print(f"== {approach}: training ...", flush=True)
                out = work / f"{approach}.json"
                command = [sys.executable, __file__, "--worker", approach, "--work", str(work)]
                command += ["--registry-url", url, *(["--quick"] if args.quick else [])]
                done = subprocess.run(command, check=False)
                results.append(
                    json.loads(out.read_text(encoding="utf-8"))
                    if out.exists()
                    else _failed(approach, f"worker exited {done.returncode}")
                )
    held_out = _held_out(scale.held_out, seed=HELD_OUT_SEED)
    defects = int((held_out[1] != "good").sum())
    print(
        f"\nredesign to a design drawn by an independent generator: {scale.labelled} labelled "
        f"production images at {scale.prevalence:.0%} prevalence, challenge set "
        f"{scale.challenge_per_class} per class; held out: {len(held_out[1])} images "
        f"({defects} defective){' [quick: figures not the goal]' if args.quick else ''}"
    )
    print(f"{'':28}" + "".join(f"{r['approach']:>22}" for r in results))
    rows = [
        ("stage", lambda r: r["stage"]),
        ("escape rate (goal <= 1%)", lambda r: f"{r['escape_rate']:.2%}"),
        ("false rejects (goal <= 0.3%)", lambda r: f"{r['false_reject_rate']:.2%}"),
        ("  classifier alone", lambda r: _pair(r, "classifier")),
        ("  anomaly detector alone", lambda r: _pair(r, "detector")),
        ("request -> version", lambda r: f"{r['seconds_to_version']:.0f} s"),
        ("line runs", lambda r: r["line_mode"]),
        ("failed gates", lambda r: ",".join(r["failed_gates"])[:20] or "-"),
        ("open evidence", lambda r: ",".join(r["open_evidence"])[:20] or "-"),
    ]
    for name, value in rows:
        print(f"{name:28}" + "".join(f"{value(r):>22}" for r in results))
    for r in results:
        escapes = ", ".join(f"{name} {n}" for name, n in r["escapes_by_class"].items())
        print(f"{r['approach']}: escapes by class: {escapes or 'none'}")
    if len(results) == 2 and results[0]["escape_rate"] > 0 and results[1]["stage"] != "failed":
        print(
            f"escape rate new / today: {results[1]['escape_rate'] / results[0]['escape_rate']:.2f}"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
