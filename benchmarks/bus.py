"""Bus throughput: our bus against a raw kafka-python loop on the same broker, in the same run.

For each event size (1 KB, 100 KB) it times publish-until-acknowledged plus consume-until-all-
handled, three ways:

- raw: kafka-python's KafkaProducer.send + flush, then a KafkaConsumer poll loop (auto-commit),
  with the same bytes and headers as our records — the floor any wrapper is measured against;
- kafka: our EventBus on the same broker (envelope, size check, decode, handler, commit per batch);
- local: our EventBus on the embedded log.

Prints events/s and each ratio to raw. Goal (issue 2): kafka >= 0.8x raw at 1 KB.

    python benchmarks/bus.py                       # starts a broker with the harness
    python benchmarks/bus.py --bootstrap HOST:PORT # uses a running broker
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from collections.abc import Callable
from functools import partial
from pathlib import Path

from kafka import KafkaConsumer, KafkaProducer
from prometheus_client import CollectorRegistry

from inspectloop.core.bus import build_bus
from inspectloop.core.events import Envelope, Event, Topic, encode
from inspectloop.core.settings import BusSettings, KafkaSettings, LocalBusSettings
from inspectloop.devtools.harness.kafka import KafkaBroker, fetch_kafka
from inspectloop.devtools.harness.process import default_cache_dir
from inspectloop.v1.inspection_pb2 import InspectionEvent

PARTITIONS = 4
MAX_RECORD_BYTES = 1_000_000


def make_topic() -> Topic[InspectionEvent]:
    return Topic(
        f"inspectloop.bench-{uuid.uuid4().hex[:8]}.v1", InspectionEvent, key=lambda m: m.line
    )


def make_event(i: int, size: int) -> InspectionEvent:
    # Feature floats pad the event to the target size (4 bytes a float on the wire).
    return InspectionEvent(
        inspection_id=f"bench-{i}",
        line=f"line-{i % 8}",
        sku="SKU-1",
        feature_vector=[0.25] * max(0, (size - 60) // 4),
    )


def run_raw(
    bootstrap: str, topic_name: str, events: list[InspectionEvent], topic: Topic[InspectionEvent]
) -> float:
    records = [encode(topic, e, Envelope.new(topic, "bench")) for e in events]
    producer = KafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        batch_size=256 * 1024,
        max_request_size=MAX_RECORD_BYTES + 64 * 1024,
    )
    consumer = KafkaConsumer(
        topic_name,
        bootstrap_servers=bootstrap,
        group_id=f"raw-{uuid.uuid4().hex[:6]}",
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=2 * MAX_RECORD_BYTES,
    )
    started = time.perf_counter()
    for key, value, headers in records:
        producer.send(topic_name, key=key, value=value, headers=headers)
    producer.flush()
    consumed = 0
    while consumed < len(records):
        for batch in consumer.poll(timeout_ms=500, max_records=500).values():
            consumed += len(batch)
    elapsed = time.perf_counter() - started
    producer.close()
    consumer.close()
    return len(records) / elapsed


def run_bus(settings: BusSettings, events: list[InspectionEvent]) -> float:
    topic = make_topic()
    bus = build_bus(settings, "bench", CollectorRegistry())
    bus.ensure_topics([topic])
    handled = 0

    def handle(event: Event[InspectionEvent]) -> None:
        nonlocal handled
        handled += 1

    consumer = bus.consumer(f"bus-{uuid.uuid4().hex[:6]}", [topic], handle)
    started = time.perf_counter()
    for event in events:
        bus.publish(topic, event)
    bus.flush()
    while handled < len(events):
        consumer.poll_once(0.5)
    elapsed = time.perf_counter() - started
    consumer.close()
    bus.close()
    return len(events) / elapsed


def best_of(repeats: int, run: Callable[[], float]) -> float:
    return max(run() for _ in range(repeats))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bootstrap", help="a running broker; by default one is started")
    parser.add_argument("--repeats", type=int, default=3, help="runs per case; the best counts")
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies the event counts")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="inspectloop-bench-") as tmp:
        broker = None
        bootstrap = args.bootstrap
        if bootstrap is None:
            fetch_kafka(default_cache_dir())
            broker = KafkaBroker(default_cache_dir(), Path(tmp) / "kafka")
            broker.start()
            broker.wait_ready(120)
            bootstrap = broker.bootstrap_servers
        try:
            kafka = BusSettings(
                backend="kafka",
                partitions=PARTITIONS,
                max_record_bytes=MAX_RECORD_BYTES,
                kafka=KafkaSettings(bootstrap_servers=bootstrap),
            )
            print(f"{'size':>7} {'events':>7} {'path':<6} {'events/s':>10} {'ratio to raw':>13}")
            for size, count in ((1_000, 20_000), (100_000, 1_000)):
                n = max(1, int(count * args.scale))
                events = [make_event(i, size) for i in range(n)]
                real_size = len(events[0].SerializeToString())

                def raw_case(events: list[InspectionEvent] = events) -> float:
                    topic = make_topic()
                    build_bus(kafka, "bench", CollectorRegistry()).ensure_topics([topic])
                    return run_raw(bootstrap, topic.name, events, topic)

                def local_case(events: list[InspectionEvent] = events) -> float:
                    directory = Path(tmp) / f"local-{uuid.uuid4().hex[:6]}"
                    local = kafka.model_copy(
                        update={"backend": "local", "local": LocalBusSettings(directory=directory)}
                    )
                    return run_bus(local, events)

                raw = best_of(args.repeats, raw_case)
                ours = best_of(args.repeats, partial(run_bus, kafka, events))
                local = best_of(args.repeats, local_case)
                for path, rate in (("raw", raw), ("kafka", ours), ("local", local)):
                    print(f"{real_size:>7} {n:>7} {path:<6} {rate:>10.0f} {rate / raw:>12.2f}x")
        finally:
            if broker is not None:
                broker.stop()


if __name__ == "__main__":
    main()
