"""A real PostgreSQL server (Debian's ``postgresql`` package) on loopback, for tests and developers.

:func:`ensure_installed` finds the server binaries (Debian keeps them in
``/usr/lib/postgresql/<major>/bin``, off ``PATH``) and installs the package with apt if they are
missing. :class:`PostgresServer` creates a cluster with ``initdb`` (a random superuser password,
scram-sha-256 authentication; without ``durable`` no fsync, so a killed server keeps every
commit but a machine crash might not), runs ``postgres`` listening on
``127.0.0.1:<port>`` with its Unix socket in the cluster's directory, and waits until a real
connection succeeds.

PostgreSQL refuses to run as root. When the harness runs as root (CI containers) the server runs
as the ``postgres`` system user that the package creates, through ``runuser``; its cluster must
then lie in a directory that user can reach. pytest's temporary directories are private to root
(0700), so in that case the cluster goes to a private directory under the system temp dir that
belongs to ``postgres`` (its path is recorded in the data dir, so a restart finds it again);
:meth:`PostgresServer.destroy` removes it. The log file and the password stay in ``data_dir``.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Final

import psycopg
from psycopg import sql

from inspectloop.core.errors import BackendUnavailableError, ConfigError
from inspectloop.core.readiness import LOOPBACK
from inspectloop.core.settings import absolute
from inspectloop.devtools.harness.process import (
    ManagedProcess,
    default_cache_dir,
    ensure_ports_free,
    exclusive_lock,
    pick_free_port,
    read_log_tail,
)

__all__ = ["PostgresServer", "ensure_installed", "find_bindir"]

logger = logging.getLogger(__name__)

DEFAULT_READY_TIMEOUT_S: Final = 60.0
APT_TIMEOUT_S: Final = 900.0
INITDB_TIMEOUT_S: Final = 120.0
SUPERUSER: Final = "postgres"
OS_USER: Final = "postgres"
_POLICY_RC_D: Final = Path("/usr/sbin/policy-rc.d")
_IDENTIFIER: Final = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def find_bindir() -> Path | None:
    """The directory holding ``initdb`` and ``postgres`` (newest major version), or None."""
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: (
            int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0
        ),
    )
    if candidates:
        return Path(candidates[-1]).parent
    found = shutil.which("initdb")
    if found and (Path(found).resolve().parent / "postgres").exists():
        return Path(found).resolve().parent
    return None


def ensure_installed(cache_dir: Path | None = None) -> Path:
    """Return the server's binary directory, installing Debian's ``postgresql`` if needed.

    The package's maintainer scripts would start a system-wide cluster on :5432; a temporary
    ``policy-rc.d`` stops that, since only the binaries are wanted.
    """
    found = find_bindir()
    if found is not None:
        return found
    lock_dir = cache_dir if cache_dir is not None else default_cache_dir()
    with exclusive_lock(lock_dir / "postgres-install.lock"):
        found = find_bindir()
        if found is not None:
            return found
        if shutil.which("apt-get") is None:
            raise BackendUnavailableError(
                "postgres: no PostgreSQL server binaries (initdb, postgres) found and apt-get is "
                "not available to install them; install PostgreSQL by hand"
            )
        logger.info("postgres: installing Debian package 'postgresql' with apt-get")
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
                logger.warning("postgres: could not write %s: %s", _POLICY_RC_D, exc)
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
                    "postgresql",
                ],
            ):
                _run(argv, env=env, timeout=APT_TIMEOUT_S, what="apt-get (needs root and a mirror)")
        finally:
            if wrote_policy:
                with contextlib.suppress(OSError):
                    _POLICY_RC_D.unlink()
        found = find_bindir()
        if found is None:
            raise BackendUnavailableError(
                "postgres: apt-get installed 'postgresql' but initdb/postgres are still missing"
            )
        return found


def _run(argv: list[str], *, env: dict[str, str] | None, timeout: float, what: str) -> None:
    try:
        result = subprocess.run(
            argv, capture_output=True, text=True, env=env, timeout=timeout, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BackendUnavailableError(f"postgres: {' '.join(argv)} failed: {exc}") from exc
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-20:])
        raise BackendUnavailableError(
            f"postgres: {what}: '{' '.join(argv)}' exited with {result.returncode}:\n{tail}"
        )


def _children(pid: int) -> list[int]:
    """Pids whose parent is ``pid`` (from /proc)."""
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rpartition(")")[2].split()
        if len(fields) > 1 and fields[1] == str(pid):
            found.append(int(entry.name))
    return found


def _exists(pid: int) -> bool:
    """True while ``pid`` is in the process table, zombies included (as the lock check sees it)."""
    return Path(f"/proc/{pid}").exists()


class PostgresServer:
    """One PostgreSQL on ``127.0.0.1:port``; superuser ``postgres`` with a random password."""

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        *,
        durable: bool = False,
        os_user: str = OS_USER,
    ) -> None:
        self.data_dir = absolute(data_dir)
        self.port = port if port is not None else pick_free_port()
        self.durable = durable
        self._as_root = os.geteuid() == 0
        self.os_user = os_user if self._as_root else None
        self._process: ManagedProcess | None = None
        self._home: Path | None = None

    # --- addresses and paths -------------------------------------------------------------------

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "postgres.log"

    @property
    def password(self) -> str:
        """The superuser's password, created once per data dir."""
        path = self.data_dir / "superuser-password"
        if not path.exists():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_hex(16))
        return path.read_text().strip()

    def url(self, database: str = "postgres") -> str:
        """A SQLAlchemy/libpq URL for ``database`` as the superuser (driver psycopg 3)."""
        return f"postgresql+psycopg://{SUPERUSER}:{self.password}@{self.address}/{database}"

    def conninfo(self, database: str = "postgres") -> str:
        """A libpq URI for psycopg.connect()."""
        return f"postgresql://{SUPERUSER}:{self.password}@{self.address}/{database}"

    @property
    def cluster_dir(self) -> Path:
        return self._cluster_home() / "data"

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
        bindir = ensure_installed()
        ensure_ports_free("postgres", [self.port])
        self.data_dir.mkdir(parents=True, exist_ok=True)
        home = self._cluster_home()
        if not (home / "data" / "PG_VERSION").exists():
            self._initdb(bindir, home)
        settings = {
            "listen_addresses": LOOPBACK,
            "port": str(self.port),
            "unix_socket_directories": str(home),
            "max_connections": "50",
            "shared_buffers": "32MB",
            "logging_collector": "off",
        }
        if not self.durable:
            # Commits still reach the OS before they return, so a killed server loses nothing;
            # only a machine crash could (what tests never need to survive).
            settings.update({"fsync": "off", "full_page_writes": "off"})
        argv = [*self._as_os_user(), str(bindir / "postgres"), "-D", str(home / "data")]
        for key, value in settings.items():
            argv += ["-c", f"{key}={value}"]
        self._process = ManagedProcess("postgres", argv, self.log_path, cwd=home)
        self._process.start()
        if wait:
            self.wait_ready(timeout)

    def wait_ready(self, timeout: float = DEFAULT_READY_TIMEOUT_S) -> None:
        if self._process is None:
            raise ConfigError("postgres: wait_ready() called before start()")
        self._process.wait_ready(self.is_ready, timeout, interval=0.1)

    def is_ready(self) -> bool:
        """True once a real login on the TCP port succeeds (not just an open socket)."""
        try:
            with psycopg.connect(self.conninfo(), connect_timeout=2) as connection:
                connection.execute("SELECT 1")
        except psycopg.Error:
            return False
        return True

    def stop(self, grace: float = 20.0) -> None:
        """Fast shutdown (SIGINT: disconnect clients, checkpoint), SIGKILL after ``grace``."""
        process = self._process
        if process is None or not process.is_running():
            return
        postmaster = self._postmaster_pid()
        if postmaster is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(postmaster, signal.SIGINT)
        deadline = time.monotonic() + grace
        while process.is_running() and time.monotonic() < deadline:
            time.sleep(0.05)
        if process.is_running():
            logger.warning("postgres ignored a fast shutdown for %g s; killing it", grace)
            self.kill()
        else:
            process.stop(grace=5.0)

    def kill(self) -> None:
        """SIGKILL the server and all its processes, as a machine crash would; the next start
        runs crash recovery. Returns once every server process is gone."""
        process = self._process
        if process is None:
            return
        postmaster = self._postmaster_pid()
        # The postmaster's children run in sessions of their own: a group kill misses them, and
        # a new server refuses to start while they still hold the old shared memory.
        victims = [postmaster, *_children(postmaster)] if postmaster is not None else []
        for pid in victims:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        process.kill()
        deadline = time.monotonic() + 10.0
        while any(_exists(pid) for pid in victims) and time.monotonic() < deadline:
            time.sleep(0.05)
        if postmaster is not None and _exists(postmaster):
            # A zombie nobody reaps (PID 1 is not an init) still "exists" for the next server's
            # lock-file check; the process is dead, so its lock file can go.
            logger.warning("postgres: postmaster %d was not reaped; removing its lock", postmaster)
            (self.cluster_dir / "postmaster.pid").unlink(missing_ok=True)

    def _postmaster_pid(self) -> int | None:
        try:
            first = (self.cluster_dir / "postmaster.pid").read_text().splitlines()[0]
        except (OSError, IndexError):
            return None
        return int(first) if first.strip().isdigit() else None

    def destroy(self) -> None:
        """Stop the server and delete its cluster (also one kept outside ``data_dir``)."""
        self.stop()
        home = self._cluster_home()
        shutil.rmtree(home, ignore_errors=True)
        (self.data_dir / "cluster-path").unlink(missing_ok=True)
        self._home = None

    def is_running(self) -> bool:
        return self._process is not None and self._process.is_running()

    def detach(self) -> None:
        if self._process is not None:
            self._process.detach()

    def log_tail(self, lines: int = 40) -> str:
        return read_log_tail(self.log_path, lines)

    def __enter__(self) -> PostgresServer:
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
        return f"PostgresServer({self.address}, cluster={self._home})"

    # --- databases -----------------------------------------------------------------------------

    def create_database(self, name: str) -> str:
        """Create database ``name`` (lowercase identifier) if missing; return its URL."""
        if not _IDENTIFIER.fullmatch(name):
            raise ConfigError(
                f"postgres: database name {name!r} must be a lowercase identifier "
                "(letters, digits, '_', at most 63)"
            )
        with psycopg.connect(self.conninfo(), autocommit=True, connect_timeout=5) as connection:
            exists = connection.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (name,)
            ).fetchone()
            if exists is None:
                connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop database ``name``, disconnecting its sessions first."""
        if not _IDENTIFIER.fullmatch(name):
            raise ConfigError(f"postgres: invalid database name {name!r}")
        with psycopg.connect(self.conninfo(), autocommit=True, connect_timeout=5) as connection:
            connection.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )

    # --- cluster set-up ------------------------------------------------------------------------

    def _as_os_user(self) -> list[str]:
        return ["runuser", "-u", self.os_user, "--"] if self.os_user else []

    def _owner_ids(self) -> tuple[int, int] | None:
        if self.os_user is None:
            return None
        try:
            entry = pwd.getpwnam(self.os_user)
        except KeyError as exc:
            raise BackendUnavailableError(
                f"postgres: running as root needs the system user {self.os_user!r} (created by "
                "Debian's postgresql package) to run the server"
            ) from exc
        return entry.pw_uid, entry.pw_gid

    def _cluster_home(self) -> Path:
        """The directory (owned by the server's user) that holds ``data/`` and the socket."""
        if self._home is not None:
            return self._home
        recorded = self.data_dir / "cluster-path"
        if recorded.exists():
            path = Path(recorded.read_text().strip())
            if path.is_dir():
                self._home = path
                return path
        self.data_dir.mkdir(parents=True, exist_ok=True)
        owner = self._owner_ids()
        home = self.data_dir / "cluster"
        home.mkdir(mode=0o700, exist_ok=True)
        if owner is not None:
            os.chown(home, *owner)
            if not self._reachable(home):
                # pytest's tmp dirs are root-only: use a private dir the server's user can reach.
                shutil.rmtree(home, ignore_errors=True)
                home = Path(tempfile.mkdtemp(prefix="inspectloop-postgres-"))
                os.chown(home, *owner)
        recorded.write_text(f"{home}\n")
        self._home = home
        return home

    def _reachable(self, path: Path) -> bool:
        argv = [*self._as_os_user(), "test", "-w", str(path), "-a", "-x", str(path)]
        return subprocess.run(argv, capture_output=True, check=False, timeout=30).returncode == 0

    def _initdb(self, bindir: Path, home: Path) -> None:
        data = home / "data"
        if data.exists():
            shutil.rmtree(data)  # a half-made cluster from an interrupted initdb
        pwfile = home / "initdb-password"
        pwfile.write_text(self.password + "\n")
        owner = self._owner_ids()
        if owner is not None:
            os.chown(pwfile, *owner)
        pwfile.chmod(0o600)
        argv = [
            *self._as_os_user(),
            str(bindir / "initdb"),
            "-D",
            str(data),
            f"--username={SUPERUSER}",
            f"--pwfile={pwfile}",
            "--auth=scram-sha-256",
            "--encoding=UTF8",
            "--locale=C.UTF-8",
            "--no-sync",
        ]
        logger.info("postgres: initdb %s", data)
        try:
            _run(argv, env=None, timeout=INITDB_TIMEOUT_S, what="initdb")
        finally:
            pwfile.unlink(missing_ok=True)
