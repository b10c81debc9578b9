"""A bus client run as a separate process by the contract tests, so that it can be SIGKILLed.

    python -m tests.integration.bus_worker consume --topic T --group G --effects DB \
        [--pause-before-commit] [--expect N]
    python -m tests.integration.bus_worker produce --topic T --count N [--window W]

Bus settings come from the INSPECTLOOP_ environment, as in a service.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from inspectloop.core.bus import Deduplicator, TopicPartition, build_bus
from inspectloop.core.events import Event, Topic
from inspectloop.core.settings import CommonSettings, load_settings
from inspectloop.v1.inspection_pb2 import InspectionEvent


def contract_topic(name: str) -> Topic[InspectionEvent]:
    return Topic(name, InspectionEvent, key=lambda m: m.line)


def consume(args: argparse.Namespace) -> None:
    settings = load_settings(CommonSettings)
    bus = build_bus(settings.bus, "bus-worker", CollectorRegistry())
    dedupe = Deduplicator(Path(args.effects))
    dedupe.connection.execute("CREATE TABLE IF NOT EXISTS effects (event_id TEXT, request_id TEXT)")
    dedupe.connection.execute("CREATE TABLE IF NOT EXISTS duplicates (event_id TEXT)")

    def handle(event: Event[Any]) -> None:
        def effect(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO effects VALUES (?, ?)",
                (event.envelope.event_id, event.message.request_id),
            )

        if not dedupe.process_once(event.envelope.event_id, effect):
            dedupe.connection.execute(
                "INSERT INTO duplicates VALUES (?)", (event.envelope.event_id,)
            )

    def pause(offsets: Mapping[TopicPartition, int]) -> None:
        handled = dedupe.connection.execute("SELECT COUNT(*) FROM effects").fetchone()[0]
        print(f"HANDLED {handled}", flush=True)
        sys.stdin.readline()  # hold here, past the handler, before the commit, until killed

    consumer = bus.consumer(
        args.group,
        [contract_topic(args.topic)],
        handle,
        before_commit=pause if args.pause_before_commit else None,
    )
    with consumer:
        print("READY", flush=True)
        while True:
            consumer.poll_once(0.5)
            done = dedupe.connection.execute(
                "SELECT COUNT(DISTINCT event_id) FROM effects"
            ).fetchone()[0]
            if args.expect and done >= args.expect:
                break
    bus.close()
    print("DONE", flush=True)


def produce(args: argparse.Namespace) -> None:
    settings = load_settings(CommonSettings)
    bus = build_bus(settings.bus, "bus-worker", CollectorRegistry())
    topic = contract_topic(args.topic)
    for start in range(0, args.count, args.window):
        pending = []
        for i in range(start, min(start + args.window, args.count)):
            event_id = f"{args.topic}-{i}"
            message = InspectionEvent(
                inspection_id=event_id, line=f"line-{i % 4}", request_id=str(i)
            )
            pending.append((event_id, bus.publish(topic, message, event_id=event_id)))
        for event_id, delivery in pending:
            try:
                delivery.result(settings.bus.kafka.delivery_timeout_s)
            except Exception as exc:
                print(f"FAIL {event_id} {type(exc).__name__}", flush=True)
            else:
                print(f"ACK {event_id}", flush=True)
    bus.close()
    print("DONE", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("consume")
    c.add_argument("--topic", required=True)
    c.add_argument("--group", required=True)
    c.add_argument("--effects", required=True)
    c.add_argument("--pause-before-commit", action="store_true")
    c.add_argument("--expect", type=int, default=0)
    p = sub.add_parser("produce")
    p.add_argument("--topic", required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--window", type=int, default=20)
    args = parser.parse_args()
    consume(args) if args.command == "consume" else produce(args)


if __name__ == "__main__":
    main()
