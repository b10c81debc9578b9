"""One contract, two backends: every test runs against the embedded log and a real Kafka broker."""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from inspectloop.core.bus import Consumer, EventBus, build_bus
from inspectloop.core.bus.base import DLQ_ERROR_KIND, DLQ_REASON, DLQ_SOURCE_TOPIC
from inspectloop.core.errors import (
    BackendUnavailableError,
    PermanentError,
    RecordTooLargeError,
    TransientError,
)
from inspectloop.core.events import Envelope, Event, Topic, header
from inspectloop.core.settings import BusSettings, KafkaSettings, LocalBusSettings
from inspectloop.devtools.harness import KafkaBroker
from inspectloop.v1.inspection_pb2 import InspectionEvent
from tests.integration.bus_worker import contract_topic

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
PARTITIONS = 4


def wait_until(
    condition: Callable[[], bool], timeout: float, what: str, poll: float = 0.05
) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(poll)


@dataclass
class BusEnv:
    """A bus backend under test, and how to make clients and subprocesses for it."""

    backend: str
    settings: BusSettings
    workdir: Path
    broker: KafkaBroker | None = None
    buses: list[EventBus] = field(default_factory=list)

    def bus(self) -> EventBus:
        bus = build_bus(self.settings, "contract-test", CollectorRegistry())
        self.buses.append(bus)
        return bus

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("INSPECTLOOP_")}
        env.update(
            INSPECTLOOP_DATA_DIR=str(self.workdir / "data"),
            INSPECTLOOP_BUS__BACKEND=self.backend,
            INSPECTLOOP_BUS__PARTITIONS=str(PARTITIONS),
            INSPECTLOOP_BUS__MAX_BATCH="100",
            INSPECTLOOP_BUS__KAFKA__BOOTSTRAP_SERVERS=self.settings.kafka.bootstrap_servers,
            INSPECTLOOP_BUS__KAFKA__SESSION_TIMEOUT_MS=str(self.settings.kafka.session_timeout_ms),
            INSPECTLOOP_BUS__KAFKA__DELIVERY_TIMEOUT_S="90",
            INSPECTLOOP_BUS__LOCAL__DIRECTORY=str(self.settings.local.directory),
            INSPECTLOOP_BUS__LOCAL__SESSION_TIMEOUT_S=str(self.settings.local.session_timeout_s),
            PYTHONPATH=str(REPO_ROOT),
        )
        return env

    def spawn(self, *args: str) -> Worker:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.integration.bus_worker", *args],
            cwd=REPO_ROOT,
            env=self.env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=open(self.workdir / f"worker-{uuid.uuid4().hex[:6]}.log", "w"),  # noqa: SIM115
            text=True,
        )
        return Worker(proc)


class Worker:
    """A bus_worker subprocess whose output lines are read with deadlines."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.strip())
        self.lines.put(None)

    def expect(self, prefix: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"worker did not print {prefix!r} within {timeout}s")
            try:
                line = self.lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(f"worker exited ({self.proc.wait()}) before {prefix!r}")
            if line.startswith(prefix):
                return line

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)


@pytest.fixture(params=["local", "kafka"])
def bus_env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BusEnv]:
    broker: KafkaBroker | None = None
    if request.param == "kafka":
        broker = request.getfixturevalue("kafka_broker")
        servers = broker.bootstrap_servers
    else:
        servers = "127.0.0.1:9"  # unused by the local backend
    settings = BusSettings(
        backend=request.param,
        partitions=PARTITIONS,
        max_batch=100,
        retry_backoff_s=0.01,
        kafka=KafkaSettings(
            bootstrap_servers=servers, session_timeout_ms=6000, delivery_timeout_s=90
        ),
        local=LocalBusSettings(directory=tmp_path / "bus", session_timeout_s=3.0),
    )
    env = BusEnv(request.param, settings, tmp_path, broker)
    yield env
    for bus in env.buses:
        bus.close()


def new_topic() -> Topic[InspectionEvent]:
    return contract_topic(f"inspectloop.contract-{uuid.uuid4().hex[:10]}.v1")


def inspection(i: int, line: str) -> InspectionEvent:
    return InspectionEvent(inspection_id=f"insp-{i}", request_id=str(i), line=line)


def drain(consumer: Consumer, until: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not until():
        if time.monotonic() > deadline:
            raise AssertionError(f"consumer {consumer.group} did not finish within {timeout}s")
        consumer.poll_once(0.2)


def test_per_key_order_is_kept_across_10000_events(bus_env: BusEnv) -> None:
    bus = bus_env.bus()
    topic = new_topic()
    bus.ensure_topics([topic])
    lines = [f"line-{n}" for n in range(8)]
    deliveries = [bus.publish(topic, inspection(i, lines[i % 8])) for i in range(10_000)]
    bus.flush(60)
    assert all(d.done() for d in deliveries)
    partitions_by_line = defaultdict(set)
    for i, delivery in enumerate(deliveries):
        partitions_by_line[lines[i % 8]].add(delivery.result(1).partition)
    assert all(len(p) == 1 for p in partitions_by_line.values()), "a key spread over partitions"

    seen: dict[str, list[int]] = defaultdict(list)

    def handle(event: Event[InspectionEvent]) -> None:
        seen[event.message.line].append(int(event.message.request_id))

    with bus.consumer(f"order-{uuid.uuid4().hex[:6]}", [topic], handle) as consumer:
        drain(consumer, lambda: sum(map(len, seen.values())) >= 10_000, timeout=120)
    assert sum(map(len, seen.values())) == 10_000
    for line, sequence in seen.items():
        assert sequence == sorted(sequence), f"{line} out of order"
        assert sequence == list(range(lines.index(line), 10_000, 8))


def test_a_consumer_is_caught_up_once_it_has_handled_what_its_topics_held(
    bus_env: BusEnv,
) -> None:
    bus = bus_env.bus()
    topic, empty = new_topic(), new_topic()
    bus.ensure_topics([topic, empty])
    for i in range(250):
        bus.publish(topic, inspection(i, f"line-{i % 5}"))
    bus.flush(60)
    handled: list[str] = []
    caught_up_after: list[int] = []

    def handle(event: Event[InspectionEvent]) -> None:
        handled.append(event.message.request_id)

    group = f"state-{uuid.uuid4().hex[:6]}"
    with bus.consumer(group, [topic, empty], handle, rebuilds_state=True) as consumer:
        deadline = time.monotonic() + 120  # a poll may return at once while the group forms
        while not consumer.caught_up.is_set():
            consumer.poll_once(0.2)
            caught_up_after.append(len(handled))
            assert time.monotonic() < deadline, "never caught up"
        # Set exactly at the end of the history, never before it.
        assert len(handled) == 250 and caught_up_after[-1] == 250
        assert all(n < 250 for n in caught_up_after[:-1])
        bus.publish(topic, inspection(250, "line-0"))
        bus.flush(30)
        drain(consumer, lambda: len(handled) == 251, timeout=30)
        assert consumer.caught_up.is_set()  # latched: new records are the live stream

    # A member of an empty topic is caught up as soon as it has its partitions.
    group = f"state-{uuid.uuid4().hex[:6]}"
    with bus.consumer(group, [empty], handle, rebuilds_state=True) as consumer:
        drain(consumer, consumer.caught_up.is_set, timeout=60)
    # A consumer that rebuilds no state never asks the backend for its lag.
    with bus.consumer(f"live-{uuid.uuid4().hex[:6]}", [topic], handle) as consumer:
        drain(consumer, lambda: len(handled) == 502, timeout=60)
        assert not consumer.caught_up.is_set()


def test_two_consumers_share_a_group_and_rebalance_on_join_and_leave(bus_env: BusEnv) -> None:
    bus = bus_env.bus()
    topic = new_topic()
    bus.ensure_topics([topic])
    group = f"rebalance-{uuid.uuid4().hex[:6]}"
    handled: dict[str, set[str]] = {"a": set(), "b": set()}
    lock = threading.Lock()

    def handler(name: str) -> Callable[[Event[InspectionEvent]], None]:
        def handle(event: Event[InspectionEvent]) -> None:
            with lock:
                handled[name].add(event.message.inspection_id)

        return handle

    def publish(start: int, count: int) -> set[str]:
        for i in range(start, start + count):
            bus.publish(topic, inspection(i, f"line-{i % 16}"))
        bus.flush(60)
        return {f"insp-{i}" for i in range(start, start + count)}

    def everything(expected: set[str]) -> Callable[[], bool]:
        def check() -> bool:
            with lock:
                return expected <= handled["a"] | handled["b"]

        return check

    stop = threading.Event()
    consumers: dict[str, Consumer] = {}

    def run(name: str, leave: threading.Event) -> None:
        consumer = bus.consumer(group, [topic], handler(name))
        consumers[name] = consumer
        with consumer:
            while not stop.is_set() and not leave.is_set():
                consumer.poll_once(0.1)

    a_leave, b_leave = threading.Event(), threading.Event()
    a = threading.Thread(target=run, args=("a", a_leave))
    a.start()
    try:
        expected = publish(0, 1000)
        wait_until(everything(expected), 60, "consumer a alone to handle the first events")
        wait_until(lambda: len(consumers["a"].assignment()) == PARTITIONS, 30, "a owns all")

        b = threading.Thread(target=run, args=("b", b_leave))
        b.start()
        wait_until(
            lambda: (
                "b" in consumers
                and len(consumers["b"].assignment()) > 0
                and len(consumers["a"].assignment()) < PARTITIONS
            ),
            60,
            "the join of b to rebalance the group",
        )
        expected |= publish(1000, 1000)
        wait_until(everything(expected), 60, "both consumers to handle the second events")
        assert handled["b"], "consumer b joined but handled nothing"
        assert not consumers["a"].assignment() & consumers["b"].assignment()

        b_leave.set()
        b.join(timeout=60)
        wait_until(
            lambda: len(consumers["a"].assignment()) == PARTITIONS, 60, "a to take over on leave"
        )
        expected |= publish(2000, 1000)
        wait_until(everything(expected), 60, "a to handle everything after b left")
    finally:
        stop.set()
        a.join(timeout=60)
    assert handled["a"] | handled["b"] == expected


def test_sigkilled_consumer_batch_is_redelivered_and_deduplicated(bus_env: BusEnv) -> None:
    bus = bus_env.bus()
    topic = new_topic()
    bus.ensure_topics([topic])
    total = 300
    for i in range(total):
        bus.publish(topic, inspection(i, f"line-{i % 4}"))
    bus.flush(60)
    effects = bus_env.workdir / "effects.sqlite3"
    group = f"crash-{uuid.uuid4().hex[:6]}"

    first = bus_env.spawn(
        "consume",
        "--topic",
        topic.name,
        "--group",
        group,
        "--effects",
        str(effects),
        "--pause-before-commit",
    )
    handled_before_kill = int(first.expect("HANDLED", timeout=90).split()[1])
    assert handled_before_kill > 0
    first.kill()  # the batch was handled and its effects recorded, but never committed

    second = bus_env.spawn(
        "consume",
        "--topic",
        topic.name,
        "--group",
        group,
        "--effects",
        str(effects),
        "--expect",
        str(total),
    )
    second.expect("DONE", timeout=120)
    assert second.proc.wait(timeout=30) == 0

    with sqlite3.connect(effects) as conn:
        rows = conn.execute("SELECT request_id FROM effects").fetchall()
        duplicates = conn.execute("SELECT COUNT(*) FROM duplicates").fetchone()[0]
    assert len(rows) == total, "each event must have exactly one effect"
    assert sorted(int(r[0]) for r in rows) == list(range(total))
    # The uncommitted batch really came back, and the de-duplication absorbed it.
    assert duplicates >= handled_before_kill


def read_back(bus: EventBus, topic: Topic[Any], wanted: set[str], timeout: float) -> list[str]:
    """Event ids a fresh group reads within ``timeout`` (or once it has all of ``wanted``)."""
    seen: list[str] = []
    group = f"verify-{uuid.uuid4().hex[:6]}"
    with (
        bus.consumer(group, [topic], lambda e: seen.append(e.envelope.event_id)) as reader,
        contextlib.suppress(AssertionError),
    ):
        drain(reader, lambda: wanted <= set(seen), timeout=timeout)
    return seen


def test_crash_mid_stream_loses_no_acknowledged_event(bus_env: BusEnv) -> None:
    bus = bus_env.bus()
    topic = new_topic()
    bus.ensure_topics([topic])
    total = 3000
    producer = bus_env.spawn("produce", "--topic", topic.name, "--count", str(total))
    acked = {producer.expect("ACK", timeout=60).split()[1] for _ in range(500)}
    if bus_env.broker is not None:
        # The broker dies mid-stream and comes back; the producer keeps going.
        bus_env.broker.kill()
        bus_env.broker.start()
        bus_env.broker.wait_ready(120)
        producer.expect("DONE", timeout=300)
    else:
        # The embedded log has no broker: the process writing to it is what can crash.
        producer.kill()
    while True:
        try:
            line = producer.lines.get(timeout=30)
        except queue.Empty:
            break
        if line is None:
            break
        if line.startswith("ACK"):
            acked.add(line.split()[1])
    assert len(acked) >= 500

    # Read back through a bus built after the restart, by a fresh group, and by another fresh
    # one if that one stays idle: after the restart the group coordinator loads its log first
    # (once over 120 s on a busy 2-core machine), and one CI run saw a single reader get nothing
    # in 300 s (the test passed alone afterwards). Lost events stay missing from every reader.
    reader_bus = bus_env.bus()
    for _ in range(5):
        consumed = read_back(reader_bus, topic, acked, timeout=90)
        if acked <= set(consumed):
            break
    assert acked <= set(consumed), f"lost {len(acked - set(consumed))} acknowledged events"
    assert len(consumed) == len(set(consumed)), "the idempotent producer wrote duplicates"


def test_malformed_records_go_to_the_dlq_and_the_consumer_carries_on(bus_env: BusEnv) -> None:
    bus = bus_env.bus()
    topic = new_topic()
    bus.ensure_topics([topic])
    valid = inspection(1, "line-1")
    good_headers = Envelope.new(topic, "test").to_headers()

    def with_header(name: str, value: bytes) -> list[tuple[str, bytes]]:
        return [(k, value if k == name else v) for k, v in good_headers]

    bus.publish(topic, inspection(0, "line-1")).result(30)
    bad = {
        "not protobuf": (b"\xff\xfe this is not protobuf", good_headers),
        "wrong type": (valid.SerializeToString(), with_header("ce_type", b"inspectloop.v1.Nope")),
        "schema version": (valid.SerializeToString(), with_header("ce_schemaversion", b"2")),
        "no envelope": (valid.SerializeToString(), []),
    }
    for value, headers in bad.values():
        bus.publish_raw(topic.name, b"line-1", value, headers).result(30)
    bus.publish(topic, inspection(2, "line-1")).result(30)

    handled: list[str] = []
    with bus.consumer(
        f"dlq-{uuid.uuid4().hex[:6]}", [topic], lambda e: handled.append(e.message.inspection_id)
    ) as consumer:
        drain(consumer, lambda: len(handled) >= 2, timeout=60)
    assert handled == ["insp-0", "insp-2"]

    dead: list[tuple[str, bytes | None, bytes]] = []
    source = bus.raw_source(f"dlq-reader-{uuid.uuid4().hex[:6]}", [topic.dlq])
    try:
        deadline = time.monotonic() + 60
        while len(dead) < 4 and time.monotonic() < deadline:
            for record in source.poll(100, 0.2):
                assert header(record.headers, DLQ_SOURCE_TOPIC) == topic.name
                assert header(record.headers, DLQ_ERROR_KIND) == "decode"
                dead.append((header(record.headers, DLQ_REASON) or "", record.key, record.value))
    finally:
        source.close()
    assert len(dead) == 4
    reasons = [reason for reason, _, _ in dead]
    assert "not a valid inspectloop.v1.InspectionEvent protobuf" in reasons[0]
    assert "wrong event type 'inspectloop.v1.Nope'" in reasons[1]
    assert "unsupported schema version '2'" in reasons[2]
    assert "missing header ce_id" in reasons[3]
    # Nothing is lost: the dead letters keep the original bytes and key.
    assert [v for _, _, v in dead] == [value for value, _ in bad.values()]
    assert all(k == b"line-1" for _, k, _ in dead)


def test_oversized_record_fails_at_publish_and_writes_nothing(bus_env: BusEnv) -> None:
    bus = bus_env.bus()
    topic = new_topic()
    bus.ensure_topics([topic])
    huge = InspectionEvent(inspection_id="huge", line="line-1", feature_vector=[0.5] * 300_000)
    with pytest.raises(RecordTooLargeError, match=r"over the bus limit of \d+ bytes"):
        bus.publish(topic, huge)
    bus.publish(topic, inspection(1, "line-1")).result(30)

    handled: list[str] = []
    with bus.consumer(
        f"big-{uuid.uuid4().hex[:6]}", [topic], lambda e: handled.append(e.message.inspection_id)
    ) as consumer:
        drain(consumer, lambda: len(handled) >= 1, timeout=60)
        consumer.poll_once(0.5)  # nothing else may follow
    assert handled == ["insp-1"]


def test_handler_failures_retry_then_dead_letter_or_pause(bus_env: BusEnv) -> None:
    bus = bus_env.bus()
    topic = new_topic()
    bus.ensure_topics([topic])
    for i, kind in enumerate(["ok", "flaky", "transient", "permanent", "down-once", "ok"]):
        bus.publish(topic, InspectionEvent(inspection_id=kind, request_id=str(i), line="line-1"))
    bus.flush(30)
    calls: dict[str, int] = defaultdict(int)
    handled: list[str] = []

    def handle(event: Event[Any]) -> None:
        kind = event.message.inspection_id
        calls[kind] += 1
        if kind == "flaky" and calls[kind] < 2:
            raise TransientError("flaky once")
        if kind == "transient":
            raise TransientError("always times out")
        if kind == "permanent":
            raise PermanentError("bad part number")
        if kind == "down-once" and calls[kind] == 1:
            raise BackendUnavailableError("registry down")
        handled.append(f"{kind}-{event.message.request_id}")

    with bus.consumer(f"fail-{uuid.uuid4().hex[:6]}", [topic], handle) as consumer:
        drain(consumer, lambda: len(handled) >= 4, timeout=60)
    assert handled == ["ok-0", "flaky-1", "down-once-4", "ok-5"]
    assert calls["transient"] == bus.settings.max_attempts
    assert calls["permanent"] == 1
    # The pause redelivered from down-once on: the earlier records were not handled twice.
    assert calls["ok"] == 2 and calls["flaky"] == 2 and calls["down-once"] == 2

    kinds: list[str | None] = []
    source = bus.raw_source(f"fail-dlq-{uuid.uuid4().hex[:6]}", [topic.dlq])
    try:
        deadline = time.monotonic() + 60
        while len(kinds) < 2 and time.monotonic() < deadline:
            kinds += [header(r.headers, DLQ_ERROR_KIND) for r in source.poll(10, 0.2)]
    finally:
        source.close()
    assert kinds == ["transient", "permanent"]


@pytest.mark.parametrize("long_running", [True, False], ids=["long-running", "plain"])
def test_a_handler_longer_than_the_poll_interval_runs_once(
    bus_env: BusEnv, long_running: bool
) -> None:
    # Two members of one group; one gets the record and its handler runs three times as long
    # as the group lets a member go without polling (a training). A long-running consumer keeps
    # its membership: the record is handled once and committed. A plain one is evicted and the
    # other member handles the record again (what the trainer did before).
    settings = bus_env.settings.model_copy(
        update={
            "keep_alive_s": 0.5,
            "kafka": bus_env.settings.kafka.model_copy(update={"max_poll_interval_ms": 6000}),
        }
    )
    limit_s = (
        settings.kafka.max_poll_interval_ms / 1000
        if bus_env.backend == "kafka"
        else settings.local.session_timeout_s
    )
    bus = build_bus(settings, "contract-test", CollectorRegistry())
    bus_env.buses.append(bus)
    topic = new_topic()
    bus.ensure_topics([topic])
    group = f"long-{uuid.uuid4().hex[:6]}"
    calls: list[str] = []
    again = threading.Event()
    committed = threading.Event()
    lock = threading.Lock()

    def handle(event: Event[Any]) -> None:
        with lock:
            calls.append(event.message.inspection_id)
            first = len(calls) == 1
        if first:
            again.wait(3 * limit_s)  # the long run, cut short if another member starts over
        else:
            again.set()

    stop = threading.Event()
    members = [
        bus.consumer(
            group,
            [topic],
            handle,
            long_running=long_running,
            before_commit=lambda offsets: committed.set() if calls else None,
        )
        for _ in range(2)
    ]
    threads = [threading.Thread(target=m.run, args=(stop, 0.2), daemon=True) for m in members]
    for thread in threads:
        thread.start()
    try:
        deadline = time.monotonic() + 60
        while sum(len(m.assignment()) for m in members) != PARTITIONS:
            assert time.monotonic() < deadline, "the group did not settle"
            time.sleep(0.1)  # the members' own threads are joining the group
        bus.publish(topic, InspectionEvent(inspection_id="train", line="line-1")).result(30)
        if long_running:
            assert committed.wait(3 * limit_s + 60), "the long handler's record was not committed"
            assert calls == ["train"]
        else:
            assert again.wait(3 * limit_s + 60), "the evicted member's record was not redelivered"
            assert calls == ["train", "train"]
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    if long_running:
        # Committed once: a new member of the group finds nothing to do.
        handled: list[str] = []
        with bus.consumer(group, [topic], lambda e: handled.append("again")) as late:
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                late.poll_once(0.2)
        assert handled == []


def test_stopping_during_a_long_handler_leaves_its_record_for_the_restart(
    bus_env: BusEnv,
) -> None:
    # SIGTERM during a training: the consumer stops at once instead of waiting for the handler,
    # and the record is not committed, so the next member of the group (the restarted trainer)
    # gets it again.
    settings = bus_env.settings.model_copy(update={"keep_alive_s": 0.2})
    bus = build_bus(settings, "contract-test", CollectorRegistry())
    bus_env.buses.append(bus)
    topic = new_topic()
    bus.ensure_topics([topic])
    group = f"abandon-{uuid.uuid4().hex[:6]}"
    started = threading.Event()
    release = threading.Event()

    def train(event: Event[Any]) -> None:
        started.set()
        release.wait(120)  # a training far longer than the test

    stop = threading.Event()
    member = bus.consumer(group, [topic], train, long_running=True)
    thread = threading.Thread(target=member.run, args=(stop, 0.2), daemon=True)
    thread.start()
    try:
        bus.publish(topic, InspectionEvent(inspection_id="train", line="line-1")).result(30)
        assert started.wait(60), "the handler never started"
        stop.set()
        thread.join(timeout=30)
        assert not thread.is_alive(), "the consumer waited for its handler instead of stopping"
    finally:
        release.set()
    handled: list[str] = []
    with bus.consumer(group, [topic], lambda e: handled.append(e.message.inspection_id)) as late:
        deadline = time.monotonic() + 60
        while not handled and time.monotonic() < deadline:
            late.poll_once(0.2)
    assert handled == ["train"]


def test_an_output_lost_while_the_broker_was_down_leaves_its_input_uncommitted(
    kafka_broker: KafkaBroker, tmp_path: Path
) -> None:
    # A handler publishes its output; the broker dies before acknowledging it and comes back
    # before the batch is committed. The producer's flush returns (kafka-python logs expired
    # records, it does not raise), so the bus must check each delivery: the input is not
    # committed, it is delivered again, and its output reaches the topic once.
    settings = BusSettings(
        backend="kafka",
        partitions=1,
        max_batch=1,  # one input per batch: a redelivery republishes only the lost output
        retry_backoff_s=0.01,
        kafka=KafkaSettings(
            bootstrap_servers=kafka_broker.bootstrap_servers,
            session_timeout_ms=120_000,  # the group keeps its member through the outage
            request_timeout_ms=3_000,
            delivery_timeout_s=5,
        ),
    )
    bus = build_bus(settings, "contract-test", CollectorRegistry())
    try:
        inputs, outputs = new_topic(), new_topic()
        bus.ensure_topics([inputs, outputs])
        total = 5
        for i in range(total):
            bus.publish(inputs, inspection(i, "line-1"))
        # The producer learns the output topic's partitions now: with the broker down a first
        # publish would block on metadata and raise, and the handler would simply be retried.
        bus.publish(outputs, inspection(-1, "line-1"), event_id="warm-up").result(30)
        calls: dict[str, int] = defaultdict(int)

        def handle(event: Event[Any]) -> None:
            inspection_id = event.message.inspection_id
            calls[inspection_id] += 1
            outage = inspection_id == "insp-0" and calls[inspection_id] == 1
            if outage:
                kafka_broker.kill()
            delivery = bus.publish(outputs, event.message, event_id=f"output-of-{inspection_id}")
            if outage:
                wait_until(delivery.done, timeout=60, what="the output's delivery to expire")
                with pytest.raises(BackendUnavailableError):
                    delivery.result(0)
                kafka_broker.start()
                kafka_broker.wait_ready(180)

        group = f"outage-{uuid.uuid4().hex[:6]}"
        with bus.consumer(group, [inputs], handle) as consumer:
            deadline = time.monotonic() + 300
            while sum(1 for k, n in calls.items() if n and k != "insp-0") < total - 1:
                assert time.monotonic() < deadline, f"inputs not all handled: {dict(calls)}"
                with contextlib.suppress(BackendUnavailableError):
                    consumer.poll_once(0.2)
        assert calls["insp-0"] == 2, "the input whose output was lost must be delivered again"

        wanted = {f"output-of-insp-{i}" for i in range(total)}
        for _ in range(3):  # the coordinator may still be loading its log after the restart
            seen = [e for e in read_back(bus, outputs, wanted, timeout=90) if e != "warm-up"]
            if wanted <= set(seen):
                break
        assert sorted(seen) == sorted(wanted), "each output must reach the topic exactly once"
    finally:
        if not kafka_broker.is_running():
            kafka_broker.start()
            kafka_broker.wait_ready(180)
        bus.close()
