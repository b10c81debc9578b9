"""Where training runs: a local Ray in this process, or a Ray cluster through job submission.

Both run the same ``run_training``; the cluster path submits ``python -m inspectloop.trainer.job
CONFIG`` through Ray's job submission API and reads the result file the job writes. The config,
the dataset snapshot and the results must then live on storage the cluster shares (on one
machine, the local disk).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Protocol

from inspectloop.core.errors import BackendUnavailableError, PermanentError
from inspectloop.trainer.ray_loop import TrainingConfig, TrainingResult, run_training

log = logging.getLogger(__name__)

RESULT_FILE = "result.json"


class TrainingRunner(Protocol):
    def run(self, config: TrainingConfig, work_dir: Path) -> TrainingResult: ...


def result_to_json(result: TrainingResult) -> str:
    return json.dumps(
        {
            "weights_path": str(result.weights_path),
            "metrics": result.metrics,
            "checkpoint_dir": str(result.checkpoint_dir),
            "resumed": result.resumed,
        }
    )


def result_from_json(text: str) -> TrainingResult:
    data = json.loads(text)
    return TrainingResult(
        weights_path=Path(data["weights_path"]),
        metrics=data["metrics"],
        checkpoint_dir=Path(data["checkpoint_dir"]),
        resumed=bool(data["resumed"]),
    )


class LocalRayRunner:
    """Starts a local Ray once (``ray.init``) and trains in it."""

    def __init__(self, num_cpus: int | None = None) -> None:
        self._num_cpus = num_cpus

    def run(self, config: TrainingConfig, work_dir: Path) -> TrainingResult:
        import ray  # noqa: PLC0415 - heavy, and only needed when training

        if not ray.is_initialized():
            ray.init(
                num_cpus=self._num_cpus,
                include_dashboard=False,
                log_to_driver=False,
                configure_logging=False,
            )
        return run_training(config)


class JobSubmissionRunner:
    """Submits training as a Ray job to the cluster at ``address`` (the dashboard's HTTP address,
    e.g. ``http://127.0.0.1:8265``) and waits for it."""

    def __init__(
        self,
        address: str,
        auth_token: str | None = None,
        timeout_s: float = 3600.0,
        poll_s: float = 1.0,
    ) -> None:
        from ray.job_submission import JobSubmissionClient  # noqa: PLC0415

        self._address = address
        self._timeout_s = timeout_s
        self._poll_s = poll_s
        # Ray clusters started with token authentication (RAY_AUTH_MODE=token) want a bearer token.
        headers = {"Authorization": f"Bearer {auth_token}"} if auth_token else None
        try:
            self._client = JobSubmissionClient(address, headers=headers)
        except Exception as exc:  # the client raises plain exceptions when unreachable
            raise BackendUnavailableError(f"Ray cluster at {address} unreachable: {exc}") from exc

    def _submit(self, entrypoint: str, submission_id: str) -> str:
        # A head that has just started answers before its job agent is up ("No available
        # agent to submit job"): that is worth a retry, within a deadline.
        deadline = time.monotonic() + 120
        while True:
            try:
                job_id: str = self._client.submit_job(
                    entrypoint=entrypoint, submission_id=submission_id
                )
            except RuntimeError as exc:
                if "No available agent" not in str(exc) or time.monotonic() > deadline:
                    raise BackendUnavailableError(f"cannot submit training job: {exc}") from exc
                time.sleep(self._poll_s)
                continue
            return job_id

    def run(self, config: TrainingConfig, work_dir: Path) -> TrainingResult:
        from ray.job_submission import JobStatus  # noqa: PLC0415

        work_dir.mkdir(parents=True, exist_ok=True)
        config_path = work_dir / "training-config.json"
        config_path.write_text(config.to_json(), encoding="utf-8")
        result_path = work_dir / RESULT_FILE
        result_path.unlink(missing_ok=True)
        job_id = self._submit(
            entrypoint=f"{sys.executable} -m inspectloop.trainer.job {config_path} {result_path}",
            submission_id=f"{config.run_name}-{int(time.time())}",
        )
        log.info("submitted training job %s to %s", job_id, self._address)
        deadline = time.monotonic() + self._timeout_s
        terminal = {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}
        status = self._client.get_job_status(job_id)
        while status not in terminal:
            if time.monotonic() > deadline:
                self._client.stop_job(job_id)
                raise BackendUnavailableError(f"training job {job_id} ran over {self._timeout_s}s")
            time.sleep(self._poll_s)  # polling a remote job's status; there is no push API
            status = self._client.get_job_status(job_id)
        if status != JobStatus.SUCCEEDED:
            logs = self._client.get_job_logs(job_id)
            raise PermanentError(f"training job {job_id} {status}:\n{logs[-4000:]}")
        return result_from_json(result_path.read_text(encoding="utf-8"))


def build_runner(
    ray_address: str | None, auth_token: str | None = None, num_cpus: int | None = None
) -> TrainingRunner:
    """The one place that picks where training runs."""
    if ray_address:
        return JobSubmissionRunner(ray_address, auth_token)
    return LocalRayRunner(num_cpus)
