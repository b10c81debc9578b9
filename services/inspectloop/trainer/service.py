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
import json
import logging
import platform
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from inspectloop import __version__
from inspectloop.core.blobstore import BlobStore
from inspectloop.core.bus import EventBus
from inspectloop.core.bus.dedupe import derived_event_id
from inspectloop.core.errors import BackendUnavailableError, PermanentError, TransientError
from inspectloop.core.events import Event
from inspectloop.core.onnx_contract import sha256_file
from inspectloop.core.registry_client import RegistryClient
from inspectloop.core.topics import MODELS
from inspectloop.trainer.anomaly import FittedDetector, fit_detector
from inspectloop.trainer.data import ImageSet, load_split
from inspectloop.trainer.fit import Metrics, metrics_from_predictions
from inspectloop.trainer.gates import rejection_reasons
from inspectloop.trainer.metrics import TrainerMetrics
from inspectloop.trainer.model import InspectionCNN, ModelSpec, build_model
from inspectloop.trainer.packaging import ArtifactType, export_onnx, package_model
from inspectloop.trainer.ray_loop import Progress, TrainingConfig
from inspectloop.trainer.report import ReportInfo, write_report
from inspectloop.trainer.runner import TrainingRunner
from inspectloop.trainer.settings import TrainerSection
from inspectloop.trainer.snapshot import (
    LabelledImage,
    LabelStore,
    build_snapshot,
    check_image_size,
    label_from_feedback,
)
from inspectloop.trainer.sources import Sources, labelled_splits
from inspectloop.trainer.validation import validate
from inspectloop.v1.feedback_pb2 import OperatorFeedback
from inspectloop.v1.models_pb2 import (
    MODEL_STAGE_REJECTED,
    MODEL_STAGE_VALIDATED,
    ClassEvidence,
    ModelVersion,
)
from inspectloop.v1.monitor_pb2 import RetrainRequest

log = logging.getLogger(__name__)

# Registry calls tried this many times (1, 2, 4, ... s apart) before the bus redelivers.
REGISTRY_ATTEMPTS = 5

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
    metrics: Metrics | None  # None when an earlier delivery trained it
    registered: dict[str, Any]
    weights_path: Path
    triton_python_repo: Path


def _split(dataset_dir: Path, split: str, spec: ModelSpec) -> ImageSet:
    return load_split(dataset_dir, split, spec.classes, cache=False)


@dataclass(frozen=True)
class ParentModel:
    """The newest production (else validated) version: what a retraining fine-tunes, and what
    its golden set must not regress against."""

    version: int
    weights: Path | None  # its checkpoint, None when it has none
    spec: ModelSpec | None  # its architecture, None when unknown
    onnx: Path | None = None  # its packaged model, for the golden comparison


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
        corrected = self._labels.add(
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
        if corrected:
            self._metrics.labels_corrected.labels(line=feedback.line).inc()
            log.info(
                "image %s relabelled %s by %s",
                feedback.image.sha256[:12],
                label,
                feedback.operator_id,
            )

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
        except TransientError as exc:
            outcome = "unavailable"
            raise BackendUnavailableError(f"retraining interrupted: {exc}") from exc
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
        """The newest production (else validated) version, its weights, packaged model and
        architecture."""
        versions = self._registry.versions(self.settings.model_name)
        for stage in ("production", "validated"):
            candidates = [v for v in versions if v.get("stage") == stage]
            if candidates:
                newest = max(int(v["version"]) for v in candidates)
                parent = self._registry.version(self.settings.model_name, newest)
                files = {a.get("kind"): a for a in parent.get("artifacts", [])}
                onnx = None
                if "onnx" in files:
                    onnx = self._work / "parents" / f"{parent['version']}.onnx"
                    if not onnx.exists():
                        self._registry.download_artifact(files["onnx"]["sha256"], onnx)
                weights = files.get("checkpoint")
                if weights is None:
                    return ParentModel(int(parent["version"]), None, None, onnx)
                path = self._work / "parents" / f"{parent['version']}.pt"
                if not path.exists():
                    self._registry.download_artifact(weights["sha256"], path)
                return ParentModel(
                    int(parent["version"]), path, parent_spec(parent, path, self.spec), onnx
                )
        return None

    def _registered_for(self, request: RetrainRequest) -> dict[str, Any] | None:
        """The version an earlier delivery of ``request`` registered, if one did."""
        for summary in sorted(
            self._registry.versions(self.settings.model_name),
            key=lambda v: -int(v["version"]),
        ):
            record = self._registry.version(self.settings.model_name, int(summary["version"]))
            if (record.get("lineage") or {}).get("retrain_request_id") == request.request_id:
                return record
        return None

    def retrain(self, request: RetrainRequest) -> TrainedVersion:
        started = time.perf_counter()
        pending = self._pending_path(request)
        if pending.exists():  # trained and packaged before; only the registration was missing
            log.info("retrain request %s: registering its trained version", request.request_id)
            return self._register_pending(request, pending)
        already = self._registered_for(request)
        if already is not None:  # a redelivery: announce what the first delivery registered
            log.info(
                "retrain request %s was answered by v%s: announcing it again",
                request.request_id,
                already["version"],
            )
            self._announce(request, ModelVersion.FromString(self._event_from(already)))
            return TrainedVersion(
                int(already["version"]), str(already["stage"]), None, already, Path(), Path()
            )
        settings = self.settings
        scope = request.scope
        labelled = self._labels.select(lines=list(scope.lines), skus=list(scope.skus))
        sources = Sources(settings, self._registry, self._blobs, self._work)
        reference_designs = sources.reference_designs()
        designs = sorted(set(scope.label_designs) or reference_designs)
        new_designs = sorted(set(designs) - reference_designs)
        snapshot = build_snapshot(
            self._work / "snapshots",
            reference_datasets=settings.reference_datasets,
            labelled=labelled,
            synthetic_datasets=sources.synthetic_datasets(new_designs, labelled),
            challenge_sets=sources.challenge_sets(sorted(set(designs) | reference_designs)),
            blob_store=self._blobs,
            classes=self.spec.classes,
            image_size=settings.image_size,
            splits=labelled_splits(settings),
            reference_train_limit=settings.reference_replay or None,
        )
        log.info("snapshot %s: %s", snapshot.snapshot_id[:12], snapshot.counts)
        parent = self._parent() if settings.fine_tune else None
        start_from = self._start_weights(parent)
        existing = [int(v["version"]) for v in self._registry.versions(settings.model_name)]
        version = max(existing, default=0) + 1
        run_name = f"{settings.model_name}-v{version}-{request.request_id[:8]}"
        fine_tuning = start_from is not None
        config = TrainingConfig(
            dataset_dir=str(snapshot.directory),
            spec=self.spec.to_dict(),
            epochs=settings.fine_tune_epochs if fine_tuning else settings.epochs,
            lr=settings.lr / 2 if fine_tuning else settings.lr,
            batch_size=settings.batch_size,
            seed=settings.seed,
            num_workers=settings.num_workers,
            cpus_per_worker=settings.cpus_per_worker,
            use_gpu=settings.use_gpu,
            max_failures=settings.max_failures,
            storage_path=str(self._work / "runs"),
            run_name=run_name,
            parent_weights=str(start_from) if start_from else None,
            new_appearance_repeats=settings.new_appearance_repeats if fine_tuning else 1,
            labelled_repeats=settings.labelled_repeats if new_designs else 0,
            # Only where there is an old design to keep while learning a new one: a first model
            # fine-tuned from the plant's weights on its own design learns, it forgets nothing.
            distill_weight=settings.distill_weight if fine_tuning and new_designs else 0.0,
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
            snapshot_id=snapshot.snapshot_id,
            snapshot_dir=snapshot.directory,
            version=version,
            parent=parent,
            config=config,
            weights_path=result.weights_path,
            designs=tuple(designs),
            started=started,
        )

    def _parent_onnx(self, parent: ParentModel | None) -> Path | None:
        """The parent's packaged model for the golden comparison: its registered ONNX, else
        (a version registered with its checkpoint only) one exported from its weights."""
        if parent is None or parent.onnx is not None:
            return parent.onnx if parent else None
        if parent.weights is None or parent.spec is None:
            return None
        path = self._work / "parents" / f"{parent.version}.exported.onnx"
        if not path.exists():
            model = build_model(parent.spec)
            model.load_state_dict(torch.load(parent.weights, weights_only=True))
            model.eval()
            export_onnx(model, parent.spec, path)
        return path

    def _start_weights(self, parent: ParentModel | None) -> Path | None:
        """What the training starts from: the parent's weights when they fit the configured
        architecture, else the configured initial weights, else nothing (from scratch)."""
        if parent is not None and parent.weights is not None:
            if parent.spec == self.spec:
                return parent.weights
            # Changed width or input size (settings): the weights do not fit, so the new
            # architecture trains from scratch; the golden set still compares with the parent.
            log.warning(
                "parent v%d has another architecture (%s) than configured (%s): its weights "
                "do not fit, training from scratch",
                parent.version,
                parent.spec or "an unknown one",
                self.spec,
            )
            return None
        initial = self.settings.initial_weights
        return initial if parent is None and initial is not None else None

    def _detector(self, model: InspectionCNN, snapshot_dir: Path) -> FittedDetector | None:
        """The anomaly detector: good training images of every design in the snapshot, its
        threshold calibrated on the held-out good images of the val split."""
        if not self.settings.anomaly.enabled:
            return None

        def goods(split: str) -> dict[str, Any]:
            if not (snapshot_dir / split).is_dir():
                return {}
            images = _split(snapshot_dir, split, self.spec)
            by: dict[str, list[int]] = {}
            for i, (record, label) in enumerate(zip(images.records, images.labels, strict=True)):
                if int(label) == self.spec.good_index:
                    by.setdefault(str(record.get("label_design", "")), []).append(i)
            return {d: images.images[np.asarray(ix)] for d, ix in by.items()}

        return fit_detector(
            model, goods("train"), goods("val"), self.settings.anomaly, self.settings.seed
        )

    def _validate_and_register(
        self,
        request: RetrainRequest,
        model: InspectionCNN,
        *,
        snapshot_id: str,
        snapshot_dir: Path,
        version: int,
        parent: ParentModel | None,
        config: TrainingConfig,
        weights_path: Path,
        designs: tuple[str, ...],
        started: float,
    ) -> TrainedVersion:
        settings = self.settings
        spec = self.spec
        detector = self._detector(model, snapshot_dir)
        out_dir = self._work / "packages" / f"v{version}"
        train = _split(snapshot_dir, "train", spec)
        chosen = np.random.default_rng(0).permutation(len(train))[:256]
        calibration = train.images[chosen]
        package = package_model(
            model,
            spec,
            out_dir,
            model_name=settings.model_name,
            triton_version=version,
            parity_images=calibration[:32],
            calibration_images=calibration,
            eval_images=calibration,
            eval_labels=train.labels[chosen],
            memory=detector.memory if detector else None,
        )
        golden = (
            _split(settings.golden_dataset, "golden", spec)
            if settings.golden_dataset is not None
            else None
        )
        validation = validate(
            package.onnx_path,
            snapshot_dir,
            spec,
            settings,
            golden=golden,
            parent_onnx=self._parent_onnx(parent),
            evidence_designs=designs,
        )
        gates = validation.gates
        reasons = rejection_reasons(gates)
        stage = "rejected" if reasons else "validated"
        acceptance = validation.acceptance
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
            validation.worst or _empty_metrics(spec),
            gates,
            int8=package.int8,
            parity_diff=package.parity_diff,
            latency=validation.latency,
            artifacts=package.artifacts,
            acceptance=acceptance,
            calibrations=detector.calibrations if detector else (),
            flagged=validation.flagged,
            flagged_total=validation.flagged_total,
        )
        version_metrics = validation.version_metrics()
        version_metrics.update(
            int8_accuracy_delta=package.int8.delta,
            onnx_parity_max_abs_diff=package.parity_diff,
            training_seconds=time.perf_counter() - started,
        )
        for evidence in acceptance.evidence:
            version_metrics[f"evidence/{evidence.class_name}/examples"] = evidence.examples
            version_metrics[f"evidence/{evidence.class_name}/lower_bound"] = evidence.lower_bound
        version_metrics = {k: float(v) for k, v in version_metrics.items() if np.isfinite(v)}
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
        open_classes = acceptance.open_classes
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
                    "started_from": config.parent_weights or "",
                    "distill_weight": config.distill_weight,
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
            "description": (
                f"too little real evidence for {', '.join(open_classes)}: its lines run "
                "guarded until operator-confirmed units close the bound"
                if open_classes and not reasons
                else ""
            ),
        }
        event = ModelVersion(
            name=settings.model_name,
            version=str(version),
            stage=MODEL_STAGE_REJECTED if reasons else MODEL_STAGE_VALIDATED,
            metrics=version_metrics,
            rejection_reasons=reasons,
            classes=list(spec.classes),
            input_width=spec.input_size,
            input_height=spec.input_size,
            required_recall_lower_bound=acceptance.required_lower_bound,
            open_evidence_classes=open_classes,
        )
        event.gate_results.extend(g.to_proto() for g in gates)
        event.class_evidence.extend(
            ClassEvidence(
                class_name=e.class_name,
                examples=e.examples,
                detected=e.detected,
                recall_lower_bound=e.lower_bound,
            )
            for e in acceptance.evidence
        )
        # Where the version applies: the rollout controller rolls it out on these lines.
        event.scope.CopyFrom(request.scope)
        event.lineage.dataset_snapshot_id = snapshot_id
        event.lineage.retrain_request_id = request.request_id
        event.lineage.parent_version = str(parent.version if parent else "")
        pending = self._pending_path(request)
        pending.parent.mkdir(parents=True, exist_ok=True)
        pending.write_text(
            json.dumps({"body": body, "event": event.SerializeToString().hex()}), encoding="utf-8"
        )
        log.info(
            "model %s v%s %s in %.0fs",
            settings.model_name,
            version,
            stage,
            time.perf_counter() - started,
        )
        trained = self._register_pending(request, pending)
        return TrainedVersion(
            trained.version,
            stage,
            validation.worst,
            trained.registered,
            weights_path,
            package.triton_python_repo,
        )

    # --- registering and announcing ------------------------------------------------------------

    def _pending_path(self, request: RetrainRequest) -> Path:
        """Where a trained version waits until the registry has it (hours of training are not
        lost to a registry that is down for a while)."""
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in request.request_id)
        return self._work / "pending" / f"{safe}.json"

    def _register_pending(self, request: RetrainRequest, pending: Path) -> TrainedVersion:
        saved = json.loads(pending.read_text(encoding="utf-8"))
        body, event = saved["body"], ModelVersion.FromString(bytes.fromhex(saved["event"]))
        registered = self._with_retries(
            "register the version",
            lambda: self._registry.register_version(
                self.settings.model_name, body, idempotency_key=request.request_id
            ),
        )
        if str(registered["version"]) != event.version:
            log.warning(
                "registry numbered the version %s, packaged as %s",
                registered["version"],
                event.version,
            )
            event.version = str(registered["version"])
        event.created_at.GetCurrentTime()
        self._announce(request, event)
        pending.unlink(missing_ok=True)
        return TrainedVersion(
            int(registered["version"]), str(body["stage"]), None, registered, Path(), Path()
        )

    def _with_retries(self, what: str, call: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """``call`` retried over a registry blip; BackendUnavailableError (the bus pauses and
        redelivers, and the pending version is registered then) when it lasts."""
        delay = 1.0
        for attempt in range(1, REGISTRY_ATTEMPTS + 1):
            try:
                return call()
            except (TransientError, BackendUnavailableError) as exc:
                if attempt == REGISTRY_ATTEMPTS:
                    raise BackendUnavailableError(
                        f"registry unavailable; could not {what} after {attempt} attempts: {exc}"
                    ) from exc
                log.warning("could not %s (attempt %d): %s; retrying", what, attempt, exc)
                time.sleep(delay)  # backing off from a registry in trouble
                delay *= 2
        raise AssertionError("unreachable")

    def _announce(self, request: RetrainRequest, event: ModelVersion) -> None:
        self._bus.publish(
            MODELS, event, event_id=derived_event_id(request.request_id, "model-version")
        ).result(self._bus.settings.kafka.delivery_timeout_s)

    @staticmethod
    def _event_from(record: dict[str, Any]) -> bytes:
        """The ModelVersion announcement of a registered version (a redelivered request's)."""
        stage = MODEL_STAGE_REJECTED if record.get("stage") == "rejected" else MODEL_STAGE_VALIDATED
        event = ModelVersion(
            name=str(record["name"]),
            version=str(record["version"]),
            stage=stage,
            metrics={k: float(v) for k, v in (record.get("metrics") or {}).items()},
            rejection_reasons=list(record.get("rejection_reasons") or []),
            classes=list(record.get("classes") or []),
            input_width=int(record.get("input_width") or 0),
            input_height=int(record.get("input_height") or 0),
        )
        scope = record.get("scope") or {}
        event.scope.lines.extend(scope.get("lines") or [])
        event.scope.skus.extend(scope.get("skus") or [])
        event.scope.label_designs.extend(scope.get("label_designs") or [])
        metrics = record.get("metrics") or {}
        for key, value in metrics.items():
            if key.startswith("evidence/") and key.endswith("/lower_bound"):
                name = key.split("/")[1]
                examples = int(metrics.get(f"evidence/{name}/examples", 0))
                event.class_evidence.add(
                    class_name=name, examples=examples, recall_lower_bound=float(value)
                )
        lineage = record.get("lineage") or {}
        event.lineage.retrain_request_id = str(lineage.get("retrain_request_id") or "")
        event.lineage.parent_version = str(lineage.get("parent_version") or "")
        event.lineage.dataset_snapshot_id = str(lineage.get("dataset_snapshot_id") or "")
        return event.SerializeToString()


def _empty_metrics(spec: ModelSpec) -> Metrics:
    return metrics_from_predictions([], [], spec.classes)


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
    # A training outlasts max_poll_interval_ms: it runs on the consumer's worker thread while
    # the consumer stays in its group, so it runs once and its request is committed once.
    retrain = bus.consumer("trainer", [RETRAIN_REQUESTS], service.handle_retrain, long_running=True)
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
