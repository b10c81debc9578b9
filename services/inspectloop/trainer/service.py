"""The trainer service: a RetrainRequest in, a validated (or rejected) model version out.

It keeps the images operators labelled (from the feedback topic). On a RetrainRequest it builds
a dataset snapshot, trains on Ray Train (fine-tuning the parent when there is one), evaluates the
result on the snapshot's test split and the golden set, judges the validation gates, packages
the model (ONNX, int8 ONNX, Triton entries), writes the validation report, uploads every
artifact to the registry, registers the version and announces it on the models topic.

A redelivered request is harmless: the registry de-duplicates the registration by the request
id (its idempotency key), and the ModelVersion event carries an id derived from the request.
"""

from __future__ import annotations

import contextlib
import logging
import platform
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from inspectloop import __version__
from inspectloop.core.blobstore import BlobStore
from inspectloop.core.bus import EventBus
from inspectloop.core.bus.dedupe import derived_event_id
from inspectloop.core.errors import BackendUnavailableError, PermanentError
from inspectloop.core.events import Event
from inspectloop.core.onnx_contract import sha256_file
from inspectloop.core.registry_client import RegistryClient
from inspectloop.core.topics import MODELS
from inspectloop.trainer.data import ImageSet, InspectionDataset, load_split
from inspectloop.trainer.fit import Metrics, evaluate, predict
from inspectloop.trainer.gates import (
    GoldenPredictions,
    evaluate_gates,
    measure_latency,
    rejection_reasons,
)
from inspectloop.trainer.metrics import TrainerMetrics
from inspectloop.trainer.model import InspectionCNN, ModelSpec, build_model
from inspectloop.trainer.packaging import ArtifactType, package_model
from inspectloop.trainer.ray_loop import Progress, TrainingConfig
from inspectloop.trainer.report import ReportInfo, select_worst_errors, write_report
from inspectloop.trainer.runner import TrainingRunner
from inspectloop.trainer.settings import TrainerSection
from inspectloop.trainer.snapshot import (
    LabelledImage,
    LabelStore,
    build_snapshot,
    check_image_size,
    label_from_feedback,
)
from inspectloop.trainer.synthesis import synthesise_defects
from inspectloop.v1.feedback_pb2 import OperatorFeedback
from inspectloop.v1.models_pb2 import (
    MODEL_STAGE_REJECTED,
    MODEL_STAGE_VALIDATED,
    ModelVersion,
)
from inspectloop.v1.monitor_pb2 import RetrainRequest

log = logging.getLogger(__name__)

_REGISTRY_KINDS = {
    ArtifactType.ONNX: "onnx",
    ArtifactType.ONNX_INT8: "onnx_int8",
    ArtifactType.TRITON_ONNX: "triton_repo",
    ArtifactType.TRITON_PYTHON: "triton_repo",
}


@dataclass(frozen=True)
class TrainedVersion:
    version: int
    stage: str
    metrics: Metrics
    registered: dict[str, Any]
    weights_path: Path
    triton_python_repo: Path


def _split(dataset_dir: Path, split: str, spec: ModelSpec) -> ImageSet:
    return load_split(dataset_dir, split, spec.classes, cache=False)


def _golden(model: InspectionCNN, images: ImageSet, spec: ModelSpec) -> GoldenPredictions:
    probabilities, _ = predict(model, InspectionDataset(images, spec.preprocess))
    ids = [str(r.get("sha256") or Path(r["path"]).stem) for r in images.records]
    return GoldenPredictions.from_probabilities(ids, images.labels, probabilities.numpy())


@dataclass(frozen=True)
class ParentModel:
    """The newest production (else validated) version: what a retraining fine-tunes, and what
    its golden set must not regress against."""

    version: int
    weights: Path | None  # its checkpoint, None when it has none
    spec: ModelSpec | None  # its architecture, None when unknown


def parent_spec(record: dict[str, Any], weights: Path, configured: ModelSpec) -> ModelSpec | None:
    """The architecture of a registered version: as its lineage records it, else (a version
    registered before the trainer recorded it) the configured one if the weights fit it."""
    recorded = ((record.get("lineage") or {}).get("training_config") or {}).get("model_spec")
    if recorded:
        return ModelSpec.from_dict(recorded)
    try:
        build_model(configured).load_state_dict(torch.load(weights, weights_only=True))
    except RuntimeError:  # missing, unexpected or differently shaped tensors
        return None
    return configured


@contextlib.contextmanager
def watch_progress(
    directory: Path, metrics: TrainerMetrics, run_name: str, poll_s: float = 1.0
) -> Iterator[None]:
    """While the block runs, the training's progress (written by its rank 0 worker into
    ``directory``) goes to the progress gauges, and to the log at every tenth."""
    stop = threading.Event()

    def poll() -> None:
        logged = -1
        while not stop.wait(poll_s):
            progress = Progress.read(directory)
            if progress is None:
                continue
            metrics.training_progress.set(progress.fraction)
            metrics.training_eta.set(progress.eta_s if progress.fraction > 0 else 0)
            metrics.training_epoch.set(progress.epoch)
            metrics.training_planned.set(progress.epochs)
            tenth = int(progress.fraction * 10)
            if tenth > logged:
                logged = tenth
                log.info(
                    "%s: epoch %d/%d, step %d/%d, %.0f%%, %.0f s left",
                    run_name,
                    progress.epoch,
                    progress.epochs,
                    progress.step,
                    progress.steps_per_epoch,
                    100 * progress.fraction,
                    progress.eta_s,
                )

    thread = threading.Thread(target=poll, name="training-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)
        for gauge in (
            metrics.training_progress,
            metrics.training_eta,
            metrics.training_epoch,
            metrics.training_planned,
        ):
            gauge.set(0)


class TrainerService:
    def __init__(
        self,
        settings: TrainerSection,
        *,
        bus: EventBus,
        blob_store: BlobStore,
        registry: RegistryClient,
        runner: TrainingRunner,
        labels: LabelStore,
        metrics: TrainerMetrics,
    ) -> None:
        self.settings = settings
        self._metrics = metrics
        self._bus = bus
        self._blobs = blob_store
        self._registry = registry
        self._runner = runner
        self._labels = labels
        assert settings.work_dir is not None  # derived by TrainerSettings
        self._work = settings.work_dir
        self.spec = ModelSpec(
            input_size=settings.image_size, width_multiplier=settings.width_multiplier
        )
        for dataset in dict.fromkeys([*settings.reference_datasets, settings.golden_dataset]):
            if dataset is not None:
                check_image_size(dataset, settings.image_size)

    # --- consumers -------------------------------------------------------------------------

    def handle_feedback(self, event: Event[OperatorFeedback]) -> None:
        feedback = event.message
        label = label_from_feedback(feedback, self.spec.classes)
        if label is None or not feedback.image.sha256:
            return
        self._labels.add(
            LabelledImage(
                sha256=feedback.image.sha256,
                label=label,
                line=feedback.line,
                sku=feedback.sku,
                label_design=feedback.label_design,
                source=f"operator:{feedback.operator_id}",
            ),
            labelled_at=event.envelope.time.timestamp(),
        )
        self._metrics.labels_stored.labels(line=feedback.line).inc()

    def handle_retrain(self, event: Event[RetrainRequest]) -> None:
        self.answer(event.message)

    def answer(self, request: RetrainRequest) -> TrainedVersion:
        """Waits for the request's labels, retrains, and counts the outcome."""
        started = time.monotonic()
        outcome = "failed"
        self._metrics.retrains_running.set(1)
        try:
            self.wait_for_labels(request)
            trained = self.retrain(request)
            outcome = trained.stage
            return trained
        except BackendUnavailableError:
            outcome = "unavailable"
            raise  # the bus pauses and redelivers once the registry or Ray is back
        except PermanentError:
            raise
        except Exception as exc:
            # Ray Train already restarted failed workers (max_failures); running the whole
            # training again on the same snapshot would fail the same way, for hours.
            raise PermanentError(f"retraining failed: {type(exc).__name__}: {exc}") from exc
        finally:
            self._metrics.retrains_running.set(0)
            self._metrics.retrains.labels(outcome=outcome).inc()
            self._metrics.retrain_duration.labels(outcome=outcome).observe(
                time.monotonic() - started
            )

    def wait_for_labels(self, request: RetrainRequest) -> None:
        """Returns once the label store holds the request's ``min_labelled_images`` in scope.

        The requester counted them on the feedback topic, which this service reads in another
        thread, so they normally arrive within seconds; after ``label_wait_s`` the request is
        dead-lettered with the counts rather than trained on fewer labels than it asked for."""
        needed = request.min_labelled_images
        scope = request.scope
        deadline = time.monotonic() + self.settings.label_wait_s
        while True:
            have = len(self._labels.select(lines=list(scope.lines), skus=list(scope.skus)))
            if have >= needed:
                return
            if time.monotonic() >= deadline:
                raise PermanentError(
                    f"retrain request {request.request_id} needs {needed} operator-labelled "
                    f"images in scope; the trainer holds {have} after waiting "
                    f"{self.settings.label_wait_s:.0f} s"
                )
            time.sleep(0.5)  # the label consumer thread fills the store meanwhile

    # --- the pipeline ----------------------------------------------------------------------

    def _parent(self) -> ParentModel | None:
        """The newest production (else validated) version, its weights and architecture."""
        versions = self._registry.versions(self.settings.model_name)
        for stage in ("production", "validated"):
            candidates = [v for v in versions if v.get("stage") == stage]
            if candidates:
                newest = max(int(v["version"]) for v in candidates)
                parent = self._registry.version(self.settings.model_name, newest)
                weights = next(
                    (a for a in parent.get("artifacts", []) if a.get("kind") == "checkpoint"), None
                )
                if weights is None:
                    return ParentModel(int(parent["version"]), None, None)
                path = self._work / "parents" / f"{parent['version']}.pt"
                if not path.exists():
                    self._registry.download_artifact(weights["sha256"], path)
                return ParentModel(
                    int(parent["version"]), path, parent_spec(parent, path, self.spec)
                )
        return None

    def _synthesise(self, request: RetrainRequest) -> list[Path]:
        """Defects synthesised on each label design the request names (see ``synthesis``):
        a set at every severity and a set at subtle severities."""
        settings = self.settings
        sets = [
            (settings.synthesised_images, (0.0, 1.0)),
            (settings.synthesised_subtle_images, (0.0, settings.synthesis_subtle_severity)),
        ]
        datasets = []
        for design in sorted(set(request.scope.label_designs)):
            for n, severity in sets:
                if n == 0:
                    continue
                dataset = synthesise_defects(
                    self._work / "synthetic",
                    design=design,
                    skus=request.scope.skus,
                    n=n,
                    defect_fraction=settings.synthesis_defect_fraction,
                    severity=severity,
                    seed=settings.seed,
                    size=settings.image_size,
                    serialization=settings.synthesis_serialization,
                )
                if dataset is not None:
                    datasets.append(dataset)
        return datasets

    def retrain(self, request: RetrainRequest) -> TrainedVersion:
        started = time.perf_counter()
        settings = self.settings
        scope = request.scope
        snapshot = build_snapshot(
            self._work / "snapshots",
            reference_datasets=settings.reference_datasets,
            labelled=self._labels.select(lines=list(scope.lines), skus=list(scope.skus)),
            synthetic_datasets=self._synthesise(request),
            blob_store=self._blobs,
            classes=self.spec.classes,
            image_size=settings.image_size,
            reference_train_limit=settings.reference_replay or None,
        )
        log.info("snapshot %s: %s", snapshot.snapshot_id[:12], snapshot.counts)
        parent = self._parent() if settings.fine_tune else None
        parent_weights = parent.weights if parent else None
        if parent and parent_weights and parent.spec != self.spec:
            # Changed width or input size (settings): the weights do not fit, so the new
            # architecture trains from scratch; the golden set still compares with the parent.
            known = parent.spec or "an unknown one"
            log.warning(
                "parent v%d has another architecture (%s) than configured (%s): its weights "
                "do not fit, training from scratch",
                parent.version,
                known,
                self.spec,
            )
            parent_weights = None
        existing = [int(v["version"]) for v in self._registry.versions(settings.model_name)]
        version = max(existing, default=0) + 1
        run_name = f"{settings.model_name}-v{version}-{request.request_id[:8]}"
        config = TrainingConfig(
            dataset_dir=str(snapshot.directory),
            spec=self.spec.to_dict(),
            epochs=settings.fine_tune_epochs if parent_weights else settings.epochs,
            lr=settings.lr / 2 if parent_weights else settings.lr,
            batch_size=settings.batch_size,
            seed=settings.seed,
            num_workers=settings.num_workers,
            cpus_per_worker=settings.cpus_per_worker,
            use_gpu=settings.use_gpu,
            max_failures=settings.max_failures,
            storage_path=str(self._work / "runs"),
            run_name=run_name,
            parent_weights=str(parent_weights) if parent_weights else None,
            new_appearance_repeats=settings.new_appearance_repeats if parent_weights else 1,
            progress_dir=str(self._work / "runs" / run_name / "progress"),
        )
        with watch_progress(Path(config.progress_dir or ""), self._metrics, run_name):
            result = self._runner.run(config, self._work / "runs" / run_name)
        model = build_model(self.spec)
        model.load_state_dict(torch.load(result.weights_path, weights_only=True))
        model.eval()
        return self._validate_and_register(
            request,
            model,
            dataset_dir=snapshot.directory,
            snapshot_id=snapshot.snapshot_id,
            version=version,
            parent=parent,
            config=config,
            weights_path=result.weights_path,
            started=started,
        )

    def _validate_and_register(
        self,
        request: RetrainRequest,
        model: InspectionCNN,
        *,
        dataset_dir: Path,
        snapshot_id: str,
        version: int,
        parent: ParentModel | None,
        config: TrainingConfig,
        weights_path: Path,
        started: float,
    ) -> TrainedVersion:
        settings = self.settings
        spec = self.spec
        test = _split(dataset_dir, "test", spec)
        metrics = evaluate(model, InspectionDataset(test, spec.preprocess))
        golden = parent_golden = None
        if settings.golden_dataset is not None:
            golden_images = _split(settings.golden_dataset, "golden", spec)
            golden = _golden(model, golden_images, spec)
            parent_golden = self._parent_golden(parent, golden_images)
        out_dir = self._work / "packages" / f"v{version}"
        val = _split(dataset_dir, "val", spec)
        package = package_model(
            model,
            spec,
            out_dir,
            model_name=settings.model_name,
            triton_version=version,
            parity_images=test.images[:32],
            calibration_images=val.images[:256],
            eval_images=test.images,
            eval_labels=test.labels,
        )
        latency = measure_latency(package.onnx_path, runs=settings.gates.latency_runs)
        gates = evaluate_gates(metrics, golden, parent_golden, latency, settings.gates)
        reasons = rejection_reasons(gates)
        stage = "rejected" if reasons else "validated"
        probabilities, _ = predict(model, InspectionDataset(test, spec.preprocess))
        report = write_report(
            out_dir / "report.html",
            ReportInfo(
                model_name=settings.model_name,
                version=str(version),
                parent_version=str(parent.version if parent else ""),
                dataset_snapshot_id=snapshot_id,
                dataset_sha256=snapshot_id,
                training_run_id=config.run_name,
                code_version=__version__,
                seed=config.seed,
                retrain_request_id=request.request_id,
                framework_versions={
                    "torch": torch.__version__,
                    "python": platform.python_version(),
                },
            ),
            metrics,
            gates,
            select_worst_errors(test.images, test.labels, probabilities.numpy(), spec.classes),
            int8=package.int8,
            parity_diff=package.parity_diff,
            latency=latency,
            artifacts=package.artifacts,
        )
        files = [
            (a.path, a.sha256, a.size_bytes, _REGISTRY_KINDS[a.kind], "application/octet-stream")
            for a in package.artifacts
        ]
        for path, kind, media in (
            (report, "report", "text/html"),
            (weights_path, "checkpoint", "application/octet-stream"),
        ):
            files.append((path, sha256_file(path), path.stat().st_size, kind, media))
        body_artifacts = [
            {
                "kind": kind,
                "sha256": sha,
                "size_bytes": size,
                "filename": path.name,
                "media_type": media,
                "uri": self._registry.upload_artifact(path, sha),
            }
            for path, sha, size, kind, media in files
        ]
        version_metrics: dict[str, float] = {
            k: float(v)
            for k, v in {
                "accuracy": metrics.accuracy,
                "false_reject_rate": metrics.false_reject_rate,
                "escape_rate": metrics.escape_rate,
                "latency_p95_ms": latency.p95_ms,
                "int8_accuracy_delta": package.int8.delta,
                "onnx_parity_max_abs_diff": package.parity_diff,
                "training_seconds": time.perf_counter() - started,
            }.items()
            if np.isfinite(v)
        }
        body = {
            "stage": stage,
            "metrics": version_metrics,
            "gate_results": [
                {
                    "gate": g.name,
                    "passed": g.passed,
                    "value": g.value if np.isfinite(g.value) else 0.0,
                    "threshold": g.threshold if np.isfinite(g.threshold) else 0.0,
                    "higher_is_better": g.higher_is_better,
                    "detail": g.detail,
                }
                for g in gates
            ],
            "rejection_reasons": reasons,
            "artifacts": body_artifacts,
            "lineage": {
                "parent_version": parent.version if parent else None,
                "dataset_snapshot_id": snapshot_id,
                "dataset_sha256": snapshot_id,
                "code_version": __version__,
                "training_run_id": config.run_name,
                "seed": config.seed,
                "retrain_request_id": request.request_id,
                "framework_versions": {"torch": torch.__version__},
                "training_config": {
                    "epochs": config.epochs,
                    "lr": config.lr,
                    "batch_size": config.batch_size,
                    "num_workers": config.num_workers,
                    "fine_tuned": config.parent_weights is not None,
                    "model_spec": spec.to_dict(),
                },
            },
            "classes": list(spec.classes),
            "input_width": spec.input_size,
            "input_height": spec.input_size,
            "scope": {
                "lines": list(request.scope.lines),
                "skus": list(request.scope.skus),
                "label_designs": list(request.scope.label_designs),
            },
        }
        registered = self._registry.register_version(
            settings.model_name, body, idempotency_key=request.request_id
        )
        if int(registered["version"]) != version:
            log.warning(
                "registry numbered the version %s, packaged as %s", registered["version"], version
            )
        event = ModelVersion(
            name=settings.model_name,
            version=str(registered["version"]),
            stage=MODEL_STAGE_REJECTED if reasons else MODEL_STAGE_VALIDATED,
            metrics=version_metrics,
            rejection_reasons=reasons,
            classes=list(spec.classes),
            input_width=spec.input_size,
            input_height=spec.input_size,
        )
        event.gate_results.extend(g.to_proto() for g in gates)
        # Where the version applies: the rollout controller rolls it out on these lines.
        event.scope.CopyFrom(request.scope)
        event.lineage.dataset_snapshot_id = snapshot_id
        event.lineage.retrain_request_id = request.request_id
        event.lineage.parent_version = str(parent.version if parent else "")
        event.created_at.GetCurrentTime()
        self._bus.publish(
            MODELS, event, event_id=derived_event_id(request.request_id, "model-version")
        ).result(self._bus.settings.kafka.delivery_timeout_s)
        log.info(
            "model %s v%s %s in %.0fs",
            settings.model_name,
            version,
            stage,
            time.perf_counter() - started,
        )
        return TrainedVersion(
            version, stage, metrics, registered, weights_path, package.triton_python_repo
        )

    def _parent_golden(
        self, parent: ParentModel | None, golden_images: ImageSet
    ) -> GoldenPredictions | None:
        """The parent's answers on the golden set, with its own architecture; None without a
        parent, or where it cannot answer on these images (unknown architecture, other input
        size or classes), which the golden gate reports."""
        if parent is None or parent.weights is None:
            return None
        same_task = parent.spec is not None and (parent.spec.input_size, parent.spec.classes) == (
            self.spec.input_size,
            self.spec.classes,
        )
        if parent.spec is None or not same_task:
            log.warning("parent v%d cannot answer on the golden set: not compared", parent.version)
            return None
        model = build_model(parent.spec)
        model.load_state_dict(torch.load(parent.weights, weights_only=True))
        model.eval()
        return _golden(model, golden_images, parent.spec)


def main() -> None:
    """``python -m inspectloop.trainer.service``: consume feedback and retrain requests."""
    import signal  # noqa: PLC0415
    import threading  # noqa: PLC0415

    from prometheus_client import CollectorRegistry  # noqa: PLC0415

    from inspectloop.core.blobstore import build_blob_store  # noqa: PLC0415
    from inspectloop.core.bus import build_bus  # noqa: PLC0415
    from inspectloop.core.logging import configure_logging  # noqa: PLC0415
    from inspectloop.core.metrics import serve_metrics  # noqa: PLC0415
    from inspectloop.core.settings import load_settings  # noqa: PLC0415
    from inspectloop.core.topics import FEEDBACK, RETRAIN_REQUESTS  # noqa: PLC0415
    from inspectloop.trainer.runner import build_runner  # noqa: PLC0415
    from inspectloop.trainer.settings import TrainerSettings  # noqa: PLC0415

    settings = load_settings(TrainerSettings, service="trainer")
    configure_logging(settings.logging, settings.service)
    section = settings.trainer
    assert section.work_dir is not None
    metrics_registry = CollectorRegistry()
    bus = build_bus(settings.bus, settings.service, metrics_registry)
    bus.ensure_topics([FEEDBACK, RETRAIN_REQUESTS, MODELS])
    token = section.registry_token.get_secret_value() if section.registry_token else None
    ray_token = section.ray_auth_token.get_secret_value() if section.ray_auth_token else None
    service = TrainerService(
        section,
        bus=bus,
        blob_store=build_blob_store(settings.blob_store),
        registry=RegistryClient(section.registry_url, token),
        runner=build_runner(section.ray_address, ray_token),
        labels=LabelStore(section.work_dir / "labels.sqlite3"),
        metrics=TrainerMetrics(metrics_registry),
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    # Labels keep flowing while a training runs: feedback has its own consumer thread.
    feedback = bus.consumer("trainer-labels", [FEEDBACK], service.handle_feedback)
    labels_thread = threading.Thread(target=feedback.run, args=(stop,), daemon=True)
    labels_thread.start()
    retrain = bus.consumer("trainer", [RETRAIN_REQUESTS], service.handle_retrain)
    server = (
        serve_metrics(metrics_registry, settings.metrics.host, settings.metrics.port)
        if settings.metrics.port
        else None
    )
    log.info("trainer ready: model %s, ray %s", section.model_name, section.ray_address or "local")
    try:
        retrain.run(stop)
    finally:
        labels_thread.join(timeout=30)
        if server is not None:
            server.close()
        bus.close()


if __name__ == "__main__":
    main()
