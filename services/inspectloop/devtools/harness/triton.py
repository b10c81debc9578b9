"""A real Triton Inference Server (2.51, from the ``nvidia-pytriton`` wheel) on loopback, on CPU.

The wheel ships ``tritonserver``, the Python backend and one backend stub per Python version, but
not laid out as a ``--backend-directory``; :func:`prepare_backend_dir` links them into one in the
cache. The server runs in explicit model-control mode over a normal model repository, so models are
loaded and unloaded on request, as the rollout code does in production.

Two environment facts matter for the Python backend's stub process (found by trying):

* ``LD_LIBRARY_PATH`` must start with this interpreter's own library directory and include the
  wheel's ``nvidia_pytriton.libs``; otherwise the stub links the system's libpython 3.11 (another
  patch release) and dies with ``'_thread.RLock' object has no attribute '_recursion_count'``.
* the stub's embedded interpreter builds ``sys.path`` from the first ``python`` on ``PATH``, so this
  environment's ``bin/`` goes first and ``model.py`` can import what the project has installed.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
import sysconfig
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from inspectloop.core.errors import BackendUnavailableError, ConfigError, PermanentError
from inspectloop.core.readiness import LOOPBACK, poll_until
from inspectloop.core.settings import absolute
from inspectloop.devtools.harness.process import (
    ManagedProcess,
    ensure_ports_free,
    pick_free_ports,
    read_log_tail,
)

logger = logging.getLogger(__name__)

TRITON_VERSION = "2.51"
DEFAULT_READY_TIMEOUT_S = 60.0
DEFAULT_MODEL_LOAD_TIMEOUT_S = 120.0
HTTP_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class TritonDistribution:
    """Where the pieces of Triton live inside the installed ``nvidia-pytriton`` wheel."""

    server_binary: Path
    python_backend_dir: Path  # libtriton_python.so + triton_python_backend_utils.py
    backend_stub: Path  # triton_python_backend_stub built for this interpreter's Python
    bundled_libs_dir: Path  # site-packages/nvidia_pytriton.libs (auditwheel-vendored .so files)


def locate_distribution() -> TritonDistribution:
    """Find tritonserver, the Python backend and the matching stub inside ``pytriton``."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise BackendUnavailableError(
            "triton: the 'nvidia-pytriton' package is not installed in this environment; "
            "it ships the tritonserver binary (pip install 'nvidia-pytriton==0.7.0')"
        )
    package_dir = Path(next(iter(spec.submodule_search_locations)))
    server_dir = package_dir / "tritonserver"
    python_version = f"{sys.version_info.major}.{sys.version_info.minor}"
    distribution = TritonDistribution(
        server_binary=server_dir / "bin" / "tritonserver",
        python_backend_dir=server_dir / "backends" / "python",
        backend_stub=server_dir
        / "python_backend_stubs"
        / python_version
        / "triton_python_backend_stub",
        bundled_libs_dir=package_dir.parent / "nvidia_pytriton.libs",
    )
    for path in (
        distribution.server_binary,
        distribution.python_backend_dir / "libtriton_python.so",
        distribution.backend_stub,
        distribution.bundled_libs_dir,
    ):
        if not path.exists():
            raise BackendUnavailableError(
                f"triton: {path} is missing from the nvidia-pytriton installation "
                f"(Python {python_version}); reinstall nvidia-pytriton==0.7.0"
            )
    return distribution


def prepare_backend_dir(cache_dir: Path) -> Path:
    """Build ``<cache>/triton-2.51/backends/python/`` from links into the wheel; return the root.

    Links, not copies: they are refreshed on every call, so a reinstalled wheel is picked up.
    """
    distribution = locate_distribution()
    backends = cache_dir / f"triton-{TRITON_VERSION}" / "backends"
    python_dir = backends / "python"
    python_dir.mkdir(parents=True, exist_ok=True)
    wanted = {
        entry.name: entry
        for entry in distribution.python_backend_dir.iterdir()
        if entry.is_file()  # skips __pycache__
    }
    wanted["triton_python_backend_stub"] = distribution.backend_stub
    for name, target in wanted.items():
        link = python_dir / name
        if link.is_symlink() and link.resolve() == target.resolve():
            continue
        temporary = python_dir / f".{name}.{os.getpid()}.tmp"
        temporary.unlink(missing_ok=True)
        temporary.symlink_to(target)
        temporary.replace(link)  # atomic, so a concurrently starting server never sees a gap
    return backends


def server_environment(distribution: TritonDistribution) -> dict[str, str]:
    """The environment tritonserver and its Python-backend stubs need (see module docstring)."""
    env = dict(os.environ)
    library_dirs = [
        sysconfig.get_config_var("LIBDIR"),
        str(distribution.bundled_libs_dir),
        env.get("LD_LIBRARY_PATH", ""),
    ]
    env["LD_LIBRARY_PATH"] = ":".join(d for d in library_dirs if d)
    env["PATH"] = ":".join(p for p in (str(Path(sys.executable).parent), env.get("PATH", "")) if p)
    return env


class TritonServer:
    """One tritonserver on ``127.0.0.1`` serving ``model_repository`` in explicit mode, on CPU."""

    def __init__(
        self,
        model_repository: Path,
        cache_dir: Path,
        data_dir: Path,
        *,
        http_port: int | None = None,
        grpc_port: int | None = None,
        metrics_port: int | None = None,
        extra_args: list[str] | None = None,
    ) -> None:
        self.model_repository = absolute(model_repository)
        self.cache_dir = absolute(cache_dir)
        self.data_dir = absolute(data_dir)
        self.extra_args = list(extra_args or [])
        fresh = iter(pick_free_ports(3))
        self.http_port = http_port if http_port is not None else next(fresh)
        self.grpc_port = grpc_port if grpc_port is not None else next(fresh)
        self.metrics_port = metrics_port if metrics_port is not None else next(fresh)
        if len({self.http_port, self.grpc_port, self.metrics_port}) != 3:
            raise ConfigError("triton: http, grpc and metrics ports must differ")
        self._process: ManagedProcess | None = None

    # --- addresses and paths -------------------------------------------------------------------

    @property
    def http_url(self) -> str:
        """``host:port`` of the HTTP endpoint, as ``tritonclient.http`` expects it."""
        return f"{LOOPBACK}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        """``host:port`` of the gRPC endpoint, as ``tritonclient.grpc`` expects it."""
        return f"{LOOPBACK}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        """Full URL of the Prometheus metrics page."""
        return f"http://{LOOPBACK}:{self.metrics_port}/metrics"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "tritonserver.log"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def process(self) -> ManagedProcess | None:
        return self._process

    # --- lifecycle -----------------------------------------------------------------------------

    def start(self, *, wait: bool = True, timeout: float = DEFAULT_READY_TIMEOUT_S) -> None:
        if self._process is not None and self._process.is_running():
            return
        if not self.model_repository.is_dir():
            raise ConfigError(
                f"triton: model repository {self.model_repository} is not a directory"
            )
        distribution = locate_distribution()
        backends = prepare_backend_dir(self.cache_dir)
        ensure_ports_free("triton", [self.http_port, self.grpc_port, self.metrics_port])
        self.data_dir.mkdir(parents=True, exist_ok=True)
        argv = [
            str(distribution.server_binary),
            f"--model-repository={self.model_repository}",
            f"--backend-directory={backends}",
            "--model-control-mode=explicit",
            "--exit-on-error=false",  # a model that fails to load must not take the server down
            "--strict-readiness=false",  # "ready" means the server is up, not every model loaded
            "--exit-timeout-secs=3",  # in-flight requests get 3 s at stop; tests restart often
            f"--http-address={LOOPBACK}",
            f"--http-port={self.http_port}",
            f"--grpc-address={LOOPBACK}",
            f"--grpc-port={self.grpc_port}",
            "--allow-metrics=true",
            "--allow-gpu-metrics=false",  # no GPU here; DCGM would only log errors
            f"--metrics-address={LOOPBACK}",
            f"--metrics-port={self.metrics_port}",
            # Unique shared-memory names, so two servers on one machine never collide in /dev/shm.
            f"--backend-config=python,shm-region-prefix-name=inspectloop_{self.grpc_port}_",
            *self.extra_args,
        ]
        self._process = ManagedProcess(
            "triton",
            argv,
            self.log_path,
            env=server_environment(distribution),
            cwd=self.data_dir,
        )
        self._process.start()
        if wait:
            self.wait_ready(timeout)

    def wait_ready(self, timeout: float = DEFAULT_READY_TIMEOUT_S) -> None:
        if self._process is None:
            raise ConfigError("triton: wait_ready() called before start()")
        self._process.wait_ready(self.is_ready, timeout)

    def is_ready(self) -> bool:
        url = f"http://{self.http_url}/v2/health/ready"
        try:
            with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT_S) as reply:
                return int(reply.status) == 200
        except (urllib.error.URLError, OSError):
            return False

    def stop(self, grace: float = 15.0) -> None:
        if self._process is not None:
            self._process.stop(grace)

    def kill(self) -> None:
        if self._process is not None:
            self._process.kill()

    def is_running(self) -> bool:
        return self._process is not None and self._process.is_running()

    def detach(self) -> None:
        if self._process is not None:
            self._process.detach()

    def log_tail(self, lines: int = 40) -> str:
        return read_log_tail(self.log_path, lines)

    def __enter__(self) -> TritonServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"TritonServer(http={self.http_url}, grpc={self.grpc_url})"

    # --- model control -------------------------------------------------------------------------

    # tritonclient is imported inside the methods: it costs ~0.2 s, and every `inspectloop`
    # command imports this module through the CLI.
    def _client(self, timeout: float = HTTP_TIMEOUT_S) -> Any:
        import tritonclient.http  # noqa: PLC0415

        return tritonclient.http.InferenceServerClient(
            url=self.http_url, connection_timeout=timeout, network_timeout=timeout
        )

    def load_model(self, name: str, *, timeout: float = DEFAULT_MODEL_LOAD_TIMEOUT_S) -> None:
        """Load (or reload) every version of ``name`` from the repository; wait for it.

        A failed load raises :class:`PermanentError` with Triton's reason and the server log's
        tail (a Python model's traceback is only in the log).
        """
        from tritonclient.utils import InferenceServerException  # noqa: PLC0415

        client = self._client(timeout)
        try:
            client.load_model(name)
        except InferenceServerException as exc:
            if not self.is_ready():
                raise BackendUnavailableError(
                    f"triton: server at {self.http_url} unavailable while loading model {name!r}: "
                    f"{exc}"
                ) from exc
            raise PermanentError(
                f"triton: loading model {name!r} from {self.model_repository} failed: {exc}\n"
                f"Last lines of {self.log_path}:\n{self.log_tail()}"
            ) from exc
        finally:
            client.close()
        logger.info("triton: model %s loaded", name)

    def unload_model(self, name: str, *, timeout: float = DEFAULT_MODEL_LOAD_TIMEOUT_S) -> None:
        """Unload every version of ``name`` and wait until it is gone."""
        from tritonclient.utils import InferenceServerException  # noqa: PLC0415

        client = self._client(timeout)
        try:
            client.unload_model(name)
        except InferenceServerException as exc:
            raise BackendUnavailableError(
                f"triton: unloading model {name!r} failed: {exc}"
            ) from exc
        finally:
            client.close()
        # Triton only starts the unload (in-flight requests finish first), so wait for it.
        poll_until(
            lambda: not self.is_model_ready(name),
            timeout=timeout,
            what=f"triton: unload of model {name!r}",
            interval=0.05,
        )
        logger.info("triton: model %s unloaded", name)

    def is_model_ready(self, name: str, version: str = "") -> bool:
        from tritonclient.utils import InferenceServerException  # noqa: PLC0415

        client = self._client()
        try:
            return bool(client.is_model_ready(name, version))
        except InferenceServerException as exc:
            raise BackendUnavailableError(
                f"triton: readiness of model {name!r} unknown: {exc}"
            ) from exc
        finally:
            client.close()

    def repository_index(self) -> list[dict[str, Any]]:
        """Triton's view of the repository: one dict per model version with its state."""
        client = self._client()
        try:
            index: list[dict[str, Any]] = client.get_model_repository_index()
            return index
        finally:
            client.close()
