"""A Ray head node started with ``ray start --head --block``: the cluster path of training.

Jobs reach it through the job submission API on its dashboard port, as they would reach a
cluster's head. Token authentication is on (``RAY_AUTH_MODE=token``) with a token of our own, so
the client must send it, as against a real cluster. ``--block`` keeps ``ray start`` in the
foreground: stopping its process group stops this head only, never another Ray on the machine
(``ray stop`` would kill every Ray process it finds).
"""

from __future__ import annotations

import os
import secrets
import shutil
import sys
import tempfile
from pathlib import Path
from types import TracebackType

from inspectloop.core.settings import absolute
from inspectloop.devtools.harness.process import ManagedProcess, pick_free_ports

DEFAULT_READY_TIMEOUT_S = 120.0


class RayHead:
    def __init__(self, data_dir: Path, num_cpus: int = 2) -> None:
        self.data_dir = absolute(data_dir)
        self.num_cpus = num_cpus
        # Every port of its own: another Ray on the machine (a test's local ray.init) holds the
        # defaults, and a head whose dashboard agent cannot bind never accepts jobs.
        (
            self.gcs_port,
            self.dashboard_port,
            self._agent_port,
            self._agent_grpc_port,
            self._metrics_port,
            self._runtime_env_port,
            self._client_port,
        ) = pick_free_ports(7)
        self.auth_token = secrets.token_hex(32)
        self._process: ManagedProcess | None = None

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def start(self, timeout: float = DEFAULT_READY_TIMEOUT_S) -> None:
        # Ray's unix socket paths must stay short (108 bytes): a short temp dir of its own, not
        # the test's deep tmp path.
        self._tmp = Path(tempfile.mkdtemp(prefix="ilray-", dir="/tmp"))
        self.data_dir.mkdir(parents=True, exist_ok=True)
        ray = Path(sys.executable).with_name("ray")
        env = {
            **os.environ,
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": self.auth_token,
            "RAY_USAGE_STATS_ENABLED": "0",
            # The job's driver and workers run the project's interpreter and packages.
            "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
        }
        self._process = ManagedProcess(
            "ray-head",
            [
                str(ray),
                "start",
                "--head",
                "--block",
                f"--port={self.gcs_port}",
                f"--num-cpus={self.num_cpus}",
                "--include-dashboard=true",
                "--dashboard-host=127.0.0.1",
                f"--dashboard-port={self.dashboard_port}",
                f"--dashboard-agent-listen-port={self._agent_port}",
                f"--dashboard-agent-grpc-port={self._agent_grpc_port}",
                f"--metrics-export-port={self._metrics_port}",
                f"--runtime-env-agent-port={self._runtime_env_port}",
                f"--ray-client-server-port={self._client_port}",
                f"--temp-dir={self._tmp}",
                "--disable-usage-stats",
            ],
            self.data_dir / "ray-head.log",
            env=env,
            stop_grace=10,  # ray start --block may ignore SIGTERM; its group is then killed
        )
        self._process.start()
        self._process.wait_ready(self._ready, timeout)

    def _ready(self) -> bool:
        from ray.job_submission import JobSubmissionClient  # noqa: PLC0415

        client = JobSubmissionClient(
            self.dashboard_url, headers={"Authorization": f"Bearer {self.auth_token}"}
        )
        client.list_jobs()
        return True

    def stop(self) -> None:
        if self._process is not None:
            self._process.stop()
            self._process = None
        shutil.rmtree(getattr(self, "_tmp", ""), ignore_errors=True)

    def __enter__(self) -> RayHead:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
