"""Keeping Triton's model repository in step with routing, from the registry's artifacts.

When routing names a version the repository does not hold, the gateway fetches the version's
Triton repository tarball from the registry (``triton_repo`` artifact of the configured backend),
checks its SHA-256 against the registry's record, unpacks only that model's version directory
and config into the repository, and asks Triton to load the model through its model-control
API. A version the repository holds but Triton does not serve (Triton restarted: in explicit
mode it starts with nothing loaded) is loaded again on the next pass. A version that fails to
fetch, verify or load is removed again, so that the repository
only holds versions Triton can serve; the versions already serving are untouched (Triton keeps
them when a reload fails), the failure is counted in ``model_load_failures_errors_total`` (an
alert rule watches it), and the version gets no traffic because it is not ready.

What happens next depends on the failure. A refused version (its record names no such
artifact, a SHA-256 mismatch, a stray path in the tarball, a model Triton will not load) is
never tried again: artifacts are content-addressed, so the same bytes would fail the same way.
Everything else is retried by the next ``ensure`` (the gateway calls it on every routing change
and every ``models.retry_s``): a registry or Triton that could not be reached, a token the
registry refuses, and a version the registry does not have yet. That last one is not a failure
and is not counted: it is what a fresh plant looks like (the default version is routed before the
first training registers it), and the version's ``model_ready`` stays 0 meanwhile.
"""

from __future__ import annotations

import logging
import shutil
import tarfile
import tempfile
import threading
from pathlib import Path, PurePosixPath

from inspectloop.core.errors import InspectloopError, PermanentError, TransientError
from inspectloop.core.onnx_contract import sha256_file
from inspectloop.core.registry_client import RegistryClient, RegistryNotFoundError
from inspectloop.gateway.metrics import GatewayMetrics
from inspectloop.inspection.triton import TritonScorer

log = logging.getLogger(__name__)

CONFIG = "config.pbtxt"


class VersionNotRegisteredError(TransientError):
    """Routing names a version the registry does not have (yet): retried, not counted."""


class RepositorySync:
    def __init__(
        self,
        repository: Path,
        registry: RegistryClient,
        triton: TritonScorer,
        metrics: GatewayMetrics,
        artifact_filename: str,
    ) -> None:
        self.repository = repository
        self.registry = registry
        self.triton = triton
        self.metrics = metrics
        self.artifact_filename = artifact_filename  # e.g. triton-python.tar.gz
        self.refused: set[tuple[str, str]] = set()  # never tried again
        self._lock = threading.Lock()

    def ensure(self, models: set[tuple[str, str]]) -> None:
        """Fetch and load every (model, version) the repository lacks and has not refused;
        failures are counted, transient ones left for the next call."""
        with self._lock:
            for name, version in sorted(models):
                if (name, version) in self.refused:
                    continue
                if (self.repository / name / version).is_dir():
                    self._reload_if_lost(name, version)
                    continue
                config = self.repository / name / CONFIG
                previous = config.read_bytes() if config.is_file() else None
                try:
                    self._install(name, version)
                    self.triton.load(name)
                    log.info("model %s v%s loaded on Triton from the registry", name, version)
                except InspectloopError as exc:
                    # The repository is put back first: whoever sees the failure counted or
                    # the refusal recorded sees the repository without the version.
                    shutil.rmtree(self.repository / name / version, ignore_errors=True)
                    if previous is not None:  # the serving versions' config, as it was
                        config.write_bytes(previous)
                    if isinstance(exc, VersionNotRegisteredError):
                        log.info("model %s v%s is not registered yet: will retry", name, version)
                        continue
                    self.metrics.model_load_failures.labels(model=name, version=version).inc()
                    if isinstance(exc, PermanentError):
                        self.refused.add((name, version))
                        log.error("model %s v%s refused, not served: %s", name, version, exc)
                    else:
                        log.warning(
                            "model %s v%s not served yet, will retry: %s", name, version, exc
                        )

    def _reload_if_lost(self, name: str, version: str) -> None:
        """Load again a version the repository holds but Triton does not serve. Triton in
        explicit mode starts with nothing loaded, so after a restart (a crash, a rescheduled
        pod) this is what brings the lines back, on the next ``ensure``."""
        if self.triton.ready(name, version):
            return
        try:
            self.triton.load(name)
        except InspectloopError as exc:  # Triton still starting, or down: the next pass retries
            log.warning("model %s v%s not ready on Triton, reload failed: %s", name, version, exc)
        else:
            log.warning("model %s v%s was not on Triton (restarted?): reloaded", name, version)

    def _install(self, name: str, version: str) -> None:
        try:
            record = self.registry.version(name, int(version))
        except RegistryNotFoundError as exc:
            raise VersionNotRegisteredError(f"the registry has no {name} v{version}") from exc
        except PermanentError as exc:
            # Not readable with this token: nothing about the artifact is known (a token is
            # fixed faster than a version is rebuilt), so it is retried, and counted.
            raise TransientError(f"the registry refused {name} v{version} to us: {exc}") from exc
        artifact = next(
            (
                a
                for a in record.get("artifacts", [])
                if a.get("kind") == "triton_repo" and a.get("filename") == self.artifact_filename
            ),
            None,
        )
        if artifact is None:
            raise PermanentError(
                f"the registry has no {self.artifact_filename} artifact for {name} v{version}"
            )
        with tempfile.TemporaryDirectory(dir=self.repository) as tmp:
            archive = self.registry.download_artifact(artifact["sha256"], Path(tmp) / "repo.tgz")
            if sha256_file(archive) != artifact["sha256"]:
                raise PermanentError(
                    f"artifact of {name} v{version} does not match its SHA-256 "
                    f"{artifact['sha256']}: refused"
                )
            unpacked = Path(tmp) / "unpacked"
            with tarfile.open(archive) as tar:
                for member in tar.getmembers():
                    parts = PurePosixPath(member.name).parts
                    if not parts or parts[0] != name:
                        raise PermanentError(f"artifact of {name} v{version}: stray {member.name}")
                tar.extractall(unpacked, filter="data")  # no links out, no absolute paths
            source = unpacked / name / version
            if not (source.is_dir() and (unpacked / name / CONFIG).is_file()):
                raise PermanentError(f"artifact of {name} v{version} has no version {version}")
            target = self.repository / name
            target.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(unpacked / name / CONFIG, target / CONFIG)
            source.rename(target / version)
