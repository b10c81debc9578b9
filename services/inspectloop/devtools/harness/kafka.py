"""A real single-node Apache Kafka broker (KRaft, broker + controller in one JVM) on loopback.

The broker's jars come from Maven Central once (``fetch_kafka``) into
``<cache>/kafka-4.1.1/libs``; each :class:`KafkaBroker` owns a data directory holding its
``server.properties``, log4j2 config, KRaft metadata and partition logs, and its log file. A broker
that was killed keeps its data directory and ports, so ``kill()`` then ``start()`` is a crash and
recovery, as the bus tests need.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import importlib.resources
import json
import logging
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path
from types import TracebackType
from typing import Any

from inspectloop.core.errors import BackendUnavailableError, ConfigError
from inspectloop.core.readiness import LOOPBACK, is_port_open
from inspectloop.core.settings import absolute
from inspectloop.devtools.harness.process import (
    ManagedProcess,
    ensure_ports_free,
    exclusive_lock,
    pick_free_ports,
    read_log_tail,
)

logger = logging.getLogger(__name__)

KAFKA_VERSION = "4.1.1"
POM_RESOURCE = "kafka-pom.xml"
FETCH_TIMEOUT_S = 900.0
DEFAULT_READY_TIMEOUT_S = 60.0
DEFAULT_HEAP = "512m"

# Kafka's own default (1 MiB + 12 bytes of record-batch overhead), set explicitly so that the bus's
# RecordTooLargeError tests and the producer's max_request_size agree with the broker on purpose.
MESSAGE_MAX_BYTES = 1_048_588
# After a SIGKILL the restarted broker cannot register until the controller expires the dead
# incarnation's session (DUPLICATE_BROKER_REGISTRATION); the default 9 s made every crash test wait
# ~12 s. 4 s with 0.5 s heartbeats still tolerates multi-second GC or CPU stalls on two cores.
BROKER_SESSION_TIMEOUT_MS = 4_000
BROKER_HEARTBEAT_INTERVAL_MS = 500
# The consumer-offsets topic is created on first group use; 4 partitions instead of 50 keeps that
# (and every restart's log recovery) fast on a two-core machine.
OFFSETS_TOPIC_PARTITIONS = 4

_PORTS_FILE = "harness-ports.json"


def kafka_home(cache_dir: Path) -> Path:
    return cache_dir / f"kafka-{KAFKA_VERSION}"


def kafka_libs_dir(cache_dir: Path) -> Path:
    return kafka_home(cache_dir) / "libs"


def _pom_text() -> str:
    return (
        importlib.resources.files("inspectloop.devtools.harness")
        .joinpath(POM_RESOURCE)
        .read_text(encoding="utf-8")
    )


def fetch_kafka(cache_dir: Path) -> Path:
    """Resolve the broker's runtime jars with Maven into the cache, once; return the libs dir.

    Idempotent: a marker holding the pom's hash is written only after Maven succeeded, so an
    interrupted fetch is redone and a changed pom refetches.
    """
    home = kafka_home(cache_dir)
    libs = kafka_libs_dir(cache_dir)
    marker = home / "fetched.json"
    pom = _pom_text()
    pom_sha256 = hashlib.sha256(pom.encode()).hexdigest()

    def is_fetched() -> bool:
        try:
            recorded = json.loads(marker.read_text())
        except (FileNotFoundError, ValueError):
            return False
        return bool(recorded.get("pom_sha256") == pom_sha256 and any(libs.glob("kafka_2.13-*.jar")))

    if is_fetched():
        return libs
    with exclusive_lock(home / ".fetch.lock"):
        if is_fetched():  # another process fetched while we waited for the lock
            return libs
        mvn = shutil.which("mvn")
        if mvn is None:
            raise BackendUnavailableError(
                "kafka: Maven ('mvn') is not on PATH; it is needed once to fetch the broker jars "
                "(apt-get install -y maven)"
            )
        logger.info("kafka: fetching Kafka %s jars from Maven Central into %s", KAFKA_VERSION, libs)
        with tempfile.TemporaryDirectory(prefix="fetch-", dir=home) as work_dir:
            work = Path(work_dir)
            (work / "pom.xml").write_text(pom, encoding="utf-8")
            partial = work / "libs"
            argv = [
                mvn,
                "-q",
                "-B",
                "-f",
                str(work / "pom.xml"),
                "dependency:copy-dependencies",
                f"-DoutputDirectory={partial}",
                "-DincludeScope=runtime",
            ]
            try:
                result = subprocess.run(
                    argv, capture_output=True, text=True, timeout=FETCH_TIMEOUT_S, check=False
                )
            except subprocess.TimeoutExpired as exc:
                raise BackendUnavailableError(
                    f"kafka: Maven did not finish fetching the broker jars within "
                    f"{FETCH_TIMEOUT_S:g} s"
                ) from exc
            if result.returncode != 0:
                output = (result.stdout + result.stderr).strip().splitlines()[-30:]
                raise BackendUnavailableError(
                    f"kafka: Maven failed (exit {result.returncode}) fetching the broker jars:\n"
                    + "\n".join(output)
                )
            if libs.exists():
                shutil.rmtree(libs)
            partial.rename(libs)
        jar_count = len(list(libs.glob("*.jar")))
        marker.write_text(json.dumps({"pom_sha256": pom_sha256, "jars": jar_count}))
        logger.info("kafka: fetched %d jars", jar_count)
    return libs


def _java() -> str:
    java = shutil.which("java")
    if java is None:
        raise BackendUnavailableError(
            "kafka: 'java' is not on PATH; the broker needs Java 17+ "
            "(apt-get install -y openjdk-17-jre-headless)"
        )
    return java


def _random_cluster_id() -> str:
    # Same format as `kafka.tools.StorageTool random-uuid` (URL-safe base64 of 16 random bytes,
    # no padding, never starting with '-'), without paying for a JVM start.
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


_LOG4J2_PROPERTIES = """\
# Written by the inspectloop harness. Everything goes to stdout, which the harness writes to the
# broker's log file; the broker's own request/state-change chatter is kept at WARN.
status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.stdout.ref = STDOUT
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.statechange.name = state.change.logger
logger.statechange.level = WARN
logger.controller.name = org.apache.kafka.controller
logger.controller.level = INFO
logger.raft.name = org.apache.kafka.raft
logger.raft.level = WARN
logger.clients.name = org.apache.kafka.clients
logger.clients.level = WARN
logger.image.name = org.apache.kafka.image
logger.image.level = WARN
"""


class KafkaBroker:
    """One KRaft broker+controller on ``127.0.0.1``; ports fixed for the object's lifetime.

    If ``data_dir`` already holds a broker started by an earlier object, its ports are reused
    (unless given), so the same bootstrap address survives a restart from a new process too.
    """

    def __init__(
        self,
        cache_dir: Path,
        data_dir: Path,
        port: int | None = None,
        controller_port: int | None = None,
        *,
        heap: str = DEFAULT_HEAP,
        extra_properties: dict[str, str] | None = None,
    ) -> None:
        self.cache_dir = absolute(cache_dir)
        self.data_dir = absolute(data_dir)
        self.heap = heap
        self.extra_properties = dict(extra_properties or {})
        self.port, self.controller_port = self._choose_ports(port, controller_port)
        self._process: ManagedProcess | None = None
        self._cluster_id: str | None = None

    # --- addresses and paths -------------------------------------------------------------------

    @property
    def bootstrap_servers(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "broker.log"

    @property
    def properties_path(self) -> Path:
        return self.data_dir / "server.properties"

    @property
    def log_dirs(self) -> Path:
        """Where the partition logs and KRaft metadata live (Kafka's ``log.dirs``)."""
        return self.data_dir / "kraft-logs"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def process(self) -> ManagedProcess | None:
        return self._process

    # --- lifecycle -----------------------------------------------------------------------------

    def start(self, *, wait: bool = True, timeout: float = DEFAULT_READY_TIMEOUT_S) -> None:
        """Start the broker (formatting its storage the first time) and wait until it is ready."""
        if self._process is not None and self._process.is_running():
            return
        libs = fetch_kafka(self.cache_dir)
        java = _java()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._write_config()
        ensure_ports_free("kafka", [self.port, self.controller_port])
        if not (self.log_dirs / "meta.properties").exists():
            self._format_storage(java, libs)
        self._cluster_id = self._read_cluster_id()
        argv = [
            java,
            f"-Xmx{self.heap}",
            "-Xms128m",
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.data_dir / 'log4j2.properties'}",
            "-cp",
            f"{libs}/*",
            "kafka.Kafka",
            str(self.properties_path),
        ]
        self._process = ManagedProcess("kafka", argv, self.log_path, cwd=self.data_dir)
        self._process.start()
        if wait:
            self.wait_ready(timeout)

    def wait_ready(self, timeout: float = DEFAULT_READY_TIMEOUT_S) -> None:
        """Poll until the broker answers admin requests and every partition has a leader."""
        if self._process is None:
            raise ConfigError("kafka: wait_ready() called before start()")
        self._process.wait_ready(self.is_ready, timeout)

    def is_ready(self) -> bool:
        """One readiness probe: unfenced in the cluster and no leaderless partition.

        Checking partition leaders matters after a crash: the broker answers metadata requests a
        moment before it has recovered its partitions, and a producer started then would fail.
        """
        if not is_port_open(self.port):
            return False
        # Imported here: kafka.admin costs ~0.25 s, and every `inspectloop` command imports this.
        from kafka.admin import KafkaAdminClient  # noqa: PLC0415

        admin = KafkaAdminClient(
            bootstrap_servers=self.bootstrap_servers,
            client_id="inspectloop-harness",
            request_timeout_ms=5_000,
            bootstrap_timeout_ms=2_000,
        )
        try:
            cluster: dict[str, Any] = admin.describe_cluster()
            if cluster.get("cluster_id") != self._cluster_id:
                return False  # another broker answered on our port
            brokers = cluster.get("brokers", [])
            if not any(not broker.get("is_fenced", False) for broker in brokers):
                return False
            topics: list[dict[str, Any]] = admin.describe_topics()
        finally:
            admin.close()
        return all(
            topic.get("error_code", 0) == 0
            and all(
                partition.get("error_code", 0) == 0 and partition.get("leader_id", -1) >= 0
                for partition in topic.get("partitions", [])
            )
            for topic in topics
        )

    def stop(self, grace: float = 30.0) -> None:
        """Controlled shutdown (SIGTERM), SIGKILL after ``grace`` seconds."""
        if self._process is not None:
            self._process.stop(grace)

    def kill(self) -> None:
        """SIGKILL the broker, as a crash would; ``start()`` afterwards recovers the same data."""
        if self._process is not None:
            self._process.kill()

    def is_running(self) -> bool:
        return self._process is not None and self._process.is_running()

    def detach(self) -> None:
        """Keep the broker running after this interpreter exits (CLI use)."""
        if self._process is not None:
            self._process.detach()

    def log_tail(self, lines: int = 40) -> str:
        return read_log_tail(self.log_path, lines)

    def __enter__(self) -> KafkaBroker:
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
        return f"KafkaBroker({self.bootstrap_servers}, data_dir={str(self.data_dir)!r})"

    # --- internals -----------------------------------------------------------------------------

    def _choose_ports(self, port: int | None, controller_port: int | None) -> tuple[int, int]:
        recorded: dict[str, int] = {}
        with contextlib.suppress(FileNotFoundError, ValueError):
            recorded = json.loads((self.data_dir / _PORTS_FILE).read_text())
        port = port if port is not None else recorded.get("port")
        controller_port = (
            controller_port if controller_port is not None else recorded.get("controller_port")
        )
        if port is None or controller_port is None:
            fresh = iter(pick_free_ports(2))
            port = port if port is not None else next(fresh)
            controller_port = controller_port if controller_port is not None else next(fresh)
        if port == controller_port:
            raise ConfigError(f"kafka: port and controller_port must differ (both {port})")
        for value in (port, controller_port):
            if not 0 < value < 65536:
                raise ConfigError(f"kafka: invalid port {value}")
        return port, controller_port

    def _properties(self) -> dict[str, str]:
        plain = f"PLAINTEXT://{LOOPBACK}:{self.port}"
        controller = f"CONTROLLER://{LOOPBACK}:{self.controller_port}"
        properties = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@{LOOPBACK}:{self.controller_port}",
            "listeners": f"{plain},{controller}",
            "advertised.listeners": plain,
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(self.log_dirs),
            "num.partitions": "1",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": str(OFFSETS_TOPIC_PARTITIONS),
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "4",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "broker.session.timeout.ms": str(BROKER_SESSION_TIMEOUT_MS),
            "broker.heartbeat.interval.ms": str(BROKER_HEARTBEAT_INTERVAL_MS),
            "auto.create.topics.enable": "false",
            "message.max.bytes": str(MESSAGE_MAX_BYTES),
        }
        properties.update(self.extra_properties)
        return properties

    def _write_config(self) -> None:
        lines = ["# Written by the inspectloop harness; rewritten on every start."]
        lines += [f"{key}={value}" for key, value in self._properties().items()]
        self.properties_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        (self.data_dir / "log4j2.properties").write_text(_LOG4J2_PROPERTIES, encoding="utf-8")
        (self.data_dir / _PORTS_FILE).write_text(
            json.dumps({"port": self.port, "controller_port": self.controller_port})
        )

    def _read_cluster_id(self) -> str:
        meta = self.log_dirs / "meta.properties"
        for line in meta.read_text(encoding="utf-8").splitlines():
            key, sep, value = line.partition("=")
            if sep and key.strip() == "cluster.id":
                return value.strip()
        raise BackendUnavailableError(f"kafka: no cluster.id in {meta}; delete {self.data_dir}")

    def _format_storage(self, java: str, libs: Path) -> None:
        argv = [
            java,
            "-Xmx256m",
            f"-Dlog4j2.configurationFile={self.data_dir / 'log4j2.properties'}",
            "-cp",
            f"{libs}/*",
            "kafka.tools.StorageTool",
            "format",
            "-t",
            _random_cluster_id(),
            "-c",
            str(self.properties_path),
        ]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
        with self.log_path.open("a", encoding="utf-8") as log:
            log.write(f"=== harness: formatting storage\n{result.stdout}{result.stderr}")
        if result.returncode != 0:
            raise BackendUnavailableError(
                f"kafka: formatting storage in {self.log_dirs} failed "
                f"(exit {result.returncode}):\n{(result.stdout + result.stderr).strip()}"
            )
