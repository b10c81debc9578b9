"""Start, watch and stop one local component process; pick free loopback ports; poll with deadlines.

Every component the harness runs (Kafka, Prometheus, Triton) is a :class:`ManagedProcess`: its
stdout and stderr go to one log file, it runs in its own process group (so stopping it also stops
whatever it forked, e.g. Triton's Python-backend stubs), and readiness is polled with a deadline,
never slept on. When a component does not come up, the error names it, the deadline, and the last
lines of its log, because that is where the reason is.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import logging
import os
import re
import signal
import socket
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import ClassVar

from inspectloop.core.errors import BackendUnavailableError, ConfigError
from inspectloop.core.readiness import (
    DEFAULT_POLL_INTERVAL_S,
    LOOPBACK,
    is_port_open,
)
from inspectloop.core.settings import absolute

logger = logging.getLogger(__name__)

DEFAULT_STOP_GRACE_S = 20.0
LOG_TAIL_LINES = 40

# Error lines in the formats of the components the harness runs: log4j (Kafka), Triton's glog
# ("E1127 ..."), Prometheus's logfmt, and Java exceptions.
_ERROR_LINE = re.compile(r"\b(ERROR|FATAL)\b|^E\d{4} |level=error|Exception\b|Error: ")


def default_cache_dir() -> Path:
    """Where fetched components live: ``$INSPECTLOOP_CACHE_DIR`` or ``~/.cache/inspectloop``."""
    configured = os.environ.get("INSPECTLOOP_CACHE_DIR")
    return absolute(configured) if configured else Path.home() / ".cache" / "inspectloop"


def pick_free_ports(count: int, host: str = LOOPBACK) -> list[int]:
    """Return ``count`` distinct ports that were free on ``host`` a moment ago.

    All sockets stay bound until every port is picked, so the ports differ from each other.
    Another process may still take one before the component binds it; that shows up as a clear
    start failure ("Address already in use" in the log tail), not a silent hang.
    """
    if count < 1:
        raise ConfigError(f"count must be at least 1, got {count}")
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((host, 0))
            sockets.append(sock)
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def pick_free_port(host: str = LOOPBACK) -> int:
    """Return one port that was free on ``host`` a moment ago (see :func:`pick_free_ports`)."""
    return pick_free_ports(1, host)[0]


def ensure_ports_free(component: str, ports: Sequence[int], host: str = LOOPBACK) -> None:
    """Fail before starting if something already listens on one of the component's ports.

    Without this, a readiness probe could be answered by that other process (say, a broker
    someone started by hand) while ours dies on "Address already in use".
    """
    taken = [port for port in ports if is_port_open(port, host)]
    if taken:
        raise BackendUnavailableError(
            f"{component}: port(s) {', '.join(map(str, taken))} on {host} are already in use "
            "by another process; stop it or choose other ports"
        )


def read_log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of a log file, or a note saying why there are none."""
    try:
        with path.open("r", encoding="utf-8", errors="replace") as log:
            return "".join(deque(log, maxlen=lines)).rstrip("\n") or "<log is empty>"
    except FileNotFoundError:
        return f"<no log at {path}>"


def signal_process_group(pgid: int, sig: signal.Signals) -> bool:
    """Send ``sig`` to a whole process group; False if the group no longer exists."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    return True


def process_group_alive(pgid: int) -> bool:
    """True while any process of the group exists (zombies included until reaped)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def terminate_process_group(pgid: int, grace: float = DEFAULT_STOP_GRACE_S) -> None:
    """SIGTERM the group, then SIGKILL whatever is left after ``grace`` seconds.

    Used for processes this interpreter did not start (the CLI's ``stop`` finds them by pid).
    """
    if not signal_process_group(pgid, signal.SIGTERM):
        return
    deadline = time.monotonic() + grace
    while _leader_running(pgid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _leader_running(pgid):
        logger.warning("process group %d ignored SIGTERM for %g s; sending SIGKILL", pgid, grace)
    # Also reaches children that outlived their leader (e.g. orphaned Triton stubs).
    signal_process_group(pgid, signal.SIGKILL)


def _leader_running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie.

    The leader of a detached component is not our child; if nothing reaps it (a container whose
    PID 1 is not an init), it stays a zombie that signals still "reach", so zombies count as gone.
    """
    _reap_if_child(pid)
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # The state letter follows the parenthesised command name, which may itself contain spaces.
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def _reap_if_child(pid: int) -> None:
    # A group leader that is our own child stays a zombie (and "alive") until waited for.
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


class ManagedProcess:
    """One component process: started in its own process group, logging to ``log_path``.

    The log file is appended to, so a restart after :meth:`kill` keeps the earlier run's lines.
    Processes still running when the interpreter exits are stopped, unless :meth:`detach` was
    called (the CLI detaches components that must outlive it).
    """

    _running: ClassVar[set[ManagedProcess]] = set()
    _running_lock: ClassVar[threading.Lock] = threading.Lock()
    _atexit_registered: ClassVar[bool] = False

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        stop_grace: float = DEFAULT_STOP_GRACE_S,
    ) -> None:
        if not argv:
            raise ConfigError(f"{name}: empty command line")
        self.name = name
        self.argv = list(argv)
        self.log_path = absolute(log_path)
        self.env = dict(env) if env is not None else None
        self.cwd = absolute(cwd) if cwd is not None else None
        self.stop_grace = stop_grace
        self._popen: subprocess.Popen[bytes] | None = None
        self._detached = False
        self._log_offset = 0  # where this run's lines begin in the (appended) log

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Start the process; a no-op if it is already running."""
        if self.is_running():
            return
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self._log_offset = log.tell()
            log.write(f"\n=== harness: starting {self.name}: {' '.join(self.argv)}\n".encode())
            log.flush()
            try:
                self._popen = subprocess.Popen(
                    self.argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=self.env,
                    cwd=self.cwd,
                    start_new_session=True,  # own process group: stop() reaches its children too
                )
            except OSError as exc:
                raise BackendUnavailableError(
                    f"{self.name}: cannot start {self.argv[0]!r}: {exc}"
                ) from exc
        self._detached = False
        self._register()
        logger.info("%s started (pid %d), log %s", self.name, self._popen.pid, self.log_path)

    def wait_ready(
        self,
        check: Callable[[], bool],
        timeout: float,
        *,
        interval: float = DEFAULT_POLL_INTERVAL_S,
    ) -> None:
        """Poll ``check`` until it returns True; fail early if the process exits.

        Raises :class:`BackendUnavailableError` naming the component, the deadline, the last
        probe error and the tail of the log.
        """
        started = time.monotonic()
        deadline = started + timeout
        last_error: BaseException | None = None
        while True:
            exit_code = self.returncode
            if exit_code is not None:
                raise BackendUnavailableError(
                    f"{self.name} exited with code {exit_code} before it became ready "
                    f"(deadline {timeout:g} s).\n{self._failure_report()}"
                )
            try:
                if check():
                    logger.info("%s ready after %.1f s", self.name, time.monotonic() - started)
                    return
            except Exception as exc:  # a probe failing while the component starts is expected
                last_error = exc
            if time.monotonic() >= deadline:
                detail = f" Last probe error: {last_error!r}." if last_error is not None else ""
                raise BackendUnavailableError(
                    f"{self.name} did not become ready within {timeout:g} s.{detail}\n"
                    f"{self._failure_report()}"
                )
            time.sleep(interval)

    def stop(self, grace: float | None = None) -> int | None:
        """SIGTERM the process group, SIGKILL it after ``grace`` seconds; return the exit code."""
        popen = self._popen
        if popen is None:
            return None
        grace = self.stop_grace if grace is None else grace
        if popen.poll() is None:
            signal_process_group(popen.pid, signal.SIGTERM)
            try:
                popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                logger.warning("%s ignored SIGTERM for %g s; sending SIGKILL", self.name, grace)
                signal_process_group(popen.pid, signal.SIGKILL)
                popen.wait()
        # Children that outlived their leader (e.g. orphaned stubs) go too.
        signal_process_group(popen.pid, signal.SIGKILL)
        self._unregister()
        logger.info("%s stopped (exit code %s)", self.name, popen.returncode)
        return popen.returncode

    def kill(self) -> int | None:
        """SIGKILL the whole process group at once, as a crash would; return the exit code."""
        popen = self._popen
        if popen is None:
            return None
        signal_process_group(popen.pid, signal.SIGKILL)
        popen.wait()
        self._unregister()
        logger.info("%s killed (exit code %s)", self.name, popen.returncode)
        return popen.returncode

    def detach(self) -> None:
        """Leave the process running when this interpreter exits (it is in its own session)."""
        self._detached = True
        self._unregister()

    # --- state -----------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen is not None else None

    @property
    def returncode(self) -> int | None:
        """The exit code once the process has exited, else None (also None if never started)."""
        return self._popen.poll() if self._popen is not None else None

    def is_running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return read_log_tail(self.log_path, lines)

    def first_error_lines(self, limit: int = 3) -> list[str]:
        """This run's first log lines that look like errors.

        A Java stack trace easily fills the whole tail, pushing out the line that says what went
        wrong; this finds that line.
        """
        try:
            with self.log_path.open("rb") as log:
                log.seek(self._log_offset)
                text = log.read().decode("utf-8", errors="replace")
        except OSError:
            return []
        found = [line.strip() for line in text.splitlines() if _ERROR_LINE.search(line)]
        return found[:limit]

    def _failure_report(self) -> str:
        errors = self.first_error_lines()
        first = "First error lines:\n  " + "\n  ".join(errors) + "\n" if errors else ""
        return f"{first}Last lines of {self.log_path}:\n{self.log_tail()}"

    def __repr__(self) -> str:
        return f"ManagedProcess({self.name!r}, pid={self.pid}, running={self.is_running()})"

    # --- stop leftovers at exit ----------------------------------------------------------------

    def _register(self) -> None:
        with ManagedProcess._running_lock:
            ManagedProcess._running.add(self)
            if not ManagedProcess._atexit_registered:
                atexit.register(ManagedProcess._stop_all_at_exit)
                ManagedProcess._atexit_registered = True

    def _unregister(self) -> None:
        with ManagedProcess._running_lock:
            ManagedProcess._running.discard(self)

    @staticmethod
    def _stop_all_at_exit() -> None:
        # A crashed test run must not leave brokers eating the machine's two cores.
        with ManagedProcess._running_lock:
            leftovers = list(ManagedProcess._running)
        for process in leftovers:
            if not process._detached:
                with contextlib.suppress(Exception):
                    process.stop(grace=5.0)


@contextlib.contextmanager
def exclusive_lock(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``lock_path`` (two test runs fetching at once wait)."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a") as lock_file:
        fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file.fileno(), fcntl.LOCK_UN)
