"""A real Prometheus server (Debian's ``prometheus`` package) on loopback, scraping given targets.

:func:`ensure_installed` installs the package once with apt if ``prometheus``/``promtool`` are
missing. :class:`PrometheusServer` writes its own ``prometheus.yml`` into its data directory, runs
with ``--web.enable-lifecycle`` so scrape targets can change without a restart, and answers PromQL
through the HTTP API.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from inspectloop.core.errors import BackendUnavailableError, ConfigError
from inspectloop.core.readiness import LOOPBACK, poll_until
from inspectloop.core.settings import absolute
from inspectloop.devtools.harness.process import (
    ManagedProcess,
    default_cache_dir,
    ensure_ports_free,
    exclusive_lock,
    pick_free_port,
    read_log_tail,
)

logger = logging.getLogger(__name__)

DEFAULT_READY_TIMEOUT_S = 30.0
APT_TIMEOUT_S = 900.0
HTTP_TIMEOUT_S = 5.0
JOB_NAME = "inspectloop"
_POLICY_RC_D = Path("/usr/sbin/policy-rc.d")


def _binaries() -> tuple[str, str] | None:
    prometheus, promtool = shutil.which("prometheus"), shutil.which("promtool")
    return (prometheus, promtool) if prometheus and promtool else None


def ensure_installed(cache_dir: Path | None = None) -> str:
    """Return the ``prometheus`` binary, installing Debian's package first if it is missing.

    The package's maintainer scripts would start a system-wide Prometheus on :9090; a temporary
    ``policy-rc.d`` (Debian's standard switch) stops that, since only the binaries are wanted.
    """
    found = _binaries()
    if found is not None:
        return found[0]
    lock_dir = cache_dir if cache_dir is not None else default_cache_dir()
    with exclusive_lock(lock_dir / "prometheus-install.lock"):
        found = _binaries()
        if found is not None:
            return found[0]
        if shutil.which("apt-get") is None:
            raise BackendUnavailableError(
                "prometheus: 'prometheus'/'promtool' are not on PATH and apt-get is not available "
                "to install them; install Prometheus by hand"
            )
        logger.info("prometheus: installing Debian package 'prometheus' with apt-get")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        wrote_policy = False
        if not _POLICY_RC_D.exists():
            try:
                _POLICY_RC_D.write_text(
                    "#!/bin/sh\n# inspectloop harness: start no services\nexit 101\n"
                )
                _POLICY_RC_D.chmod(0o755)
                wrote_policy = True
            except OSError as exc:
                logger.warning("prometheus: could not write %s: %s", _POLICY_RC_D, exc)
        try:
            for argv in (
                ["apt-get", "-o", "DPkg::Lock::Timeout=300", "update"],
                [
                    "apt-get",
                    "-o",
                    "DPkg::Lock::Timeout=300",
                    "install",
                    "-y",
                    "--no-install-recommends",
                    "prometheus",
                ],
            ):
                _run_apt(argv, env)
        finally:
            if wrote_policy:
                with contextlib.suppress(OSError):
                    _POLICY_RC_D.unlink()
        found = _binaries()
        if found is None:
            raise BackendUnavailableError(
                "prometheus: apt-get installed 'prometheus' but 'prometheus'/'promtool' are still "
                "not on PATH"
            )
        return found[0]


def _run_apt(argv: list[str], env: dict[str, str]) -> None:
    try:
        result = subprocess.run(
            argv, capture_output=True, text=True, env=env, timeout=APT_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BackendUnavailableError(f"prometheus: {' '.join(argv)} failed: {exc}") from exc
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-20:])
        raise BackendUnavailableError(
            f"prometheus: '{' '.join(argv)}' failed with exit code {result.returncode} "
            f"(needs root and access to the Debian mirror):\n{tail}"
        )


def _validate_target(target: str) -> str:
    host, sep, port = target.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ConfigError(f"prometheus: scrape target must be 'host:port', got {target!r}")
    return target


class PrometheusServer:
    """One Prometheus on ``127.0.0.1:port`` scraping ``scrape_targets`` each ``scrape_interval``."""

    def __init__(
        self,
        data_dir: Path,
        scrape_targets: Sequence[str] = (),
        scrape_interval: str = "1s",
        port: int | None = None,
        *,
        rule_files: Sequence[Path] = (),
    ) -> None:
        self.data_dir = absolute(data_dir)
        self.scrape_targets = [_validate_target(t) for t in scrape_targets]
        self.scrape_interval = scrape_interval
        self.rule_files = [absolute(p) for p in rule_files]
        self.port = port if port is not None else pick_free_port()
        self._process: ManagedProcess | None = None

    # --- addresses and paths -------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    @property
    def config_path(self) -> Path:
        return self.data_dir / "prometheus.yml"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "prometheus.log"

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
        binary = ensure_installed()
        ensure_ports_free("prometheus", [self.port])
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._write_config()
        argv = [
            binary,
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={self.data_dir / 'tsdb'}",
            f"--web.listen-address={self.address}",
            "--web.enable-lifecycle",
            "--storage.tsdb.retention.time=1d",
            "--log.level=info",
        ]
        self._process = ManagedProcess("prometheus", argv, self.log_path, cwd=self.data_dir)
        self._process.start()
        if wait:
            self.wait_ready(timeout)

    def wait_ready(self, timeout: float = DEFAULT_READY_TIMEOUT_S) -> None:
        if self._process is None:
            raise ConfigError("prometheus: wait_ready() called before start()")
        self._process.wait_ready(self.is_ready, timeout)

    def is_ready(self) -> bool:
        try:
            ready_url = f"{self.url}/-/ready"
            with urllib.request.urlopen(ready_url, timeout=HTTP_TIMEOUT_S) as reply:  # noqa: S310
                return int(reply.status) == 200
        except (urllib.error.URLError, OSError):
            return False

    def stop(self, grace: float = 10.0) -> None:
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

    def __enter__(self) -> PrometheusServer:
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
        return f"PrometheusServer({self.url}, targets={self.scrape_targets})"

    # --- configuration -------------------------------------------------------------------------

    def set_scrape_targets(self, targets: Sequence[str]) -> None:
        """Replace the scrape targets; a running server reloads its config at once.

        New targets are scraped within about 5 s, not one interval: Prometheus (2.42) passes
        target changes from discovery to the scrape manager at most once every 5 s.
        """
        self.scrape_targets = [_validate_target(t) for t in targets]
        if self.is_running():
            self._write_config()
            self.reload()

    def reload(self) -> None:
        """Make a running server re-read ``prometheus.yml`` (POST ``/-/reload``)."""
        request = urllib.request.Request(f"{self.url}/-/reload", method="POST")  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as reply:  # noqa: S310
                reply.read()
        except urllib.error.HTTPError as exc:
            body = exc.read().decode(errors="replace")
            raise ConfigError(f"prometheus: config reload rejected: {body}") from exc
        except (urllib.error.URLError, OSError) as exc:
            raise BackendUnavailableError(
                f"prometheus: reload at {self.url} failed: {exc}"
            ) from exc

    def _write_config(self) -> None:
        # JSON is valid YAML, so the config is written without a YAML library.
        config: dict[str, Any] = {
            "global": {
                "scrape_interval": self.scrape_interval,
                "evaluation_interval": self.scrape_interval,
            },
            "scrape_configs": [
                {
                    "job_name": JOB_NAME,
                    "scrape_interval": self.scrape_interval,
                    "scrape_timeout": self.scrape_interval,
                    "static_configs": [{"targets": self.scrape_targets}],
                }
            ],
        }
        if self.rule_files:
            config["rule_files"] = [str(path) for path in self.rule_files]
        self.config_path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")

    # --- queries -------------------------------------------------------------------------------

    def query(self, promql: str) -> list[dict[str, Any]]:
        """Evaluate an instant PromQL query; return ``data.result`` (one dict per series).

        A scalar or string result is returned as a one-element list holding ``{"value": ...}``.
        """
        url = f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
        try:
            with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT_S) as reply:  # noqa: S310
                payload = json.loads(reply.read())
        except urllib.error.HTTPError as exc:
            try:
                error = json.loads(exc.read()).get("error", str(exc))
            except ValueError:
                error = str(exc)
            if exc.code in (400, 422):
                raise ConfigError(f"prometheus: bad query {promql!r}: {error}") from exc
            raise BackendUnavailableError(f"prometheus: query {promql!r} failed: {error}") from exc
        except (urllib.error.URLError, OSError) as exc:
            raise BackendUnavailableError(f"prometheus: {self.url} unreachable: {exc}") from exc
        if payload.get("status") != "success":
            raise BackendUnavailableError(f"prometheus: query {promql!r} failed: {payload}")
        data = payload["data"]
        if data.get("resultType") in ("scalar", "string"):
            return [{"value": data["result"]}]
        result: list[dict[str, Any]] = data["result"]
        return result

    def wait_for_query(
        self,
        promql: str,
        *,
        timeout: float = 30.0,
        until: Callable[[list[dict[str, Any]]], bool] = bool,
    ) -> list[dict[str, Any]]:
        """Poll ``promql`` until ``until(result)`` holds (default: any series); return it."""

        def attempt() -> list[dict[str, Any]] | None:
            result = self.query(promql)
            return result if until(result) else None

        return poll_until(attempt, timeout=timeout, what=f"prometheus query {promql!r}")
