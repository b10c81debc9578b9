"""The event bus: one implementation of the semantics over two small transports.

A backend only moves bytes: its ``Producer`` sends records and acknowledges them, its
``Source`` polls, commits and rewinds the partitions a group member owns. Everything that
makes the bus trustworthy lives here once, for both backends:

- publish: envelope in headers, size limit checked before anything is written;
- consume: decode, run the handler with bounded retries, dead-letter what cannot succeed,
  wait until the handler's outputs are acknowledged, and only then commit offsets.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from google.protobuf.message import Message

from inspectloop.core.bus.metrics import BusMetrics
from inspectloop.core.errors import (
    BackendUnavailableError,
    DecodeError,
    InspectloopError,
    PermanentError,
    RecordTooLargeError,
    TransientError,
)
from inspectloop.core.events import (
    Envelope,
    Event,
    Headers,
    M,
    RawRecord,
    Topic,
    dead_letter_topic,
    decode,
    encode,
    record_size,
)
from inspectloop.core.settings import BusSettings

log = logging.getLogger(__name__)

TopicPartition = tuple[str, int]
Handler = Callable[[Event[Any]], None]

# Headers added to a dead-lettered record; the original headers are kept in front of them.
DLQ_REASON = "dlq_reason"
DLQ_ERROR_KIND = "dlq_error_kind"
DLQ_SOURCE_TOPIC = "dlq_source_topic"
DLQ_SOURCE_PARTITION = "dlq_source_partition"
DLQ_SOURCE_OFFSET = "dlq_source_offset"
DLQ_GROUP = "dlq_consumer_group"
DLQ_ATTEMPTS = "dlq_attempts"
DLQ_FAILED_AT = "dlq_failed_at"

# What the batch being handled has published (outputs and dead letters), on the consumer's
# thread and on a long-running handler's worker. A producer's flush waits for every record but
# does not raise for one that failed (kafka-python logs it): the batch is committed only after
# each of these deliveries is checked.
_batch_deliveries: contextvars.ContextVar[list[Delivery] | None] = contextvars.ContextVar(
    "inspectloop_batch_deliveries", default=None
)


@dataclass(frozen=True)
class RecordMetadata:
    """Where an acknowledged record was written."""

    topic: str
    partition: int
    offset: int


class Delivery(Protocol):
    """An in-flight publish. ``result`` blocks until the backend acknowledges the record."""

    def result(self, timeout: float | None = None) -> RecordMetadata: ...

    def done(self) -> bool: ...


class Producer(Protocol):
    def send(self, topic: str, key: bytes | None, value: bytes, headers: Headers) -> Delivery: ...

    def flush(self, timeout: float | None = None) -> None: ...

    def close(self) -> None: ...


class Source(Protocol):
    """The consuming side of one group member."""

    def poll(self, max_records: int, timeout_s: float) -> list[RawRecord]: ...

    def commit(self, offsets: Mapping[TopicPartition, int]) -> None: ...

    def rewind(self, offsets: Mapping[TopicPartition, int]) -> None: ...

    def assignment(self) -> set[TopicPartition]: ...

    def lag(self) -> int | None:
        """Records in the assigned partitions past this member's position (None while nothing
        is assigned yet)."""
        ...

    def pause(self, partitions: Iterable[TopicPartition]) -> None:
        """Fetch nothing from ``partitions`` until :meth:`resume` (polls keep the membership)."""
        ...

    def resume(self, partitions: Iterable[TopicPartition]) -> None: ...

    def close(self) -> None: ...


class Admin(Protocol):
    def create_topics(
        self, names: Sequence[str], partitions: int, *, compacted: Collection[str] = ()
    ) -> None:
        """Create the topics that do not exist; those in ``compacted`` are (made) compacted."""
        ...

    def close(self) -> None: ...


class SourceFactory(Protocol):
    def __call__(self, group: str, topics: Sequence[str]) -> Source: ...


class EventBus:
    """Publishes protobuf events and runs consumers, over a backend's producer and sources."""

    def __init__(
        self,
        settings: BusSettings,
        source_name: str,
        *,
        producer: Producer,
        source_factory: SourceFactory,
        admin: Admin,
        metrics: BusMetrics,
    ) -> None:
        self.settings = settings
        self.source_name = source_name
        self._producer = producer
        self._source_factory = source_factory
        self._admin = admin
        self._metrics = metrics

    def ensure_topics(self, topics: Iterable[Topic[Any]]) -> None:
        """Create the topics and their dead-letter topics if they do not exist yet."""
        topics = list(topics)
        names = sorted({n for t in topics for n in (t.name, t.dlq)})
        compacted = {t.name for t in topics if t.compacted}
        self._admin.create_topics(names, self.settings.partitions, compacted=compacted)

    def publish(
        self,
        topic: Topic[M],
        message: M,
        *,
        event_id: str | None = None,
        time: datetime | None = None,
    ) -> Delivery:
        """Send ``message``; the record is durable once the returned delivery's result is in.

        ``event_id`` defaults to a new UUID; pass one to make a retried publish de-duplicable.
        Raises RecordTooLargeError, before anything is written, for a record over the limit.
        """
        envelope = Envelope.new(topic, self.source_name, event_id=event_id, time=time)
        key, value, headers = encode(topic, message, envelope)
        return self._send(topic.name, key, value, headers)

    def publish_raw(
        self, topic: str, key: bytes | None, value: bytes, headers: Headers
    ) -> Delivery:
        """Send bytes as they are: for dead-lettering, replaying a DLQ, and tests of bad input."""
        return self._send(topic, key, value, headers)

    def _send(self, topic: str, key: bytes | None, value: bytes, headers: Headers) -> Delivery:
        size = record_size(key, value, headers)
        if size > self.settings.max_record_bytes:
            raise RecordTooLargeError(
                f"record for {topic} is {size} bytes, over the bus limit of "
                f"{self.settings.max_record_bytes} bytes (INSPECTLOOP_BUS__MAX_RECORD_BYTES); "
                "large payloads such as images belong in the blob store, referenced by hash"
            )
        delivery = self._producer.send(topic, key, value, headers)
        self._metrics.published.labels(topic=topic).inc()
        _note_batch_output(delivery)
        return delivery

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every record published so far is acknowledged (or raise)."""
        self._producer.flush(timeout)

    def consumer(
        self,
        group: str,
        topics: Sequence[Topic[Any]],
        handler: Handler,
        *,
        before_commit: Callable[[Mapping[TopicPartition, int]], None] | None = None,
        long_running: bool = False,
        rebuilds_state: bool = False,
    ) -> Consumer:
        """A member of consumer group ``group`` that feeds every event of ``topics`` to
        ``handler``. ``before_commit`` runs after a batch and its outputs succeeded, just before
        the offsets are committed (used for checkpoints and by crash tests).

        ``rebuilds_state``: the handler rebuilds state from the topics' history, and
        :attr:`Consumer.caught_up` tells when it has all of it (the lag is asked of the backend
        between batches until then; other consumers never ask).

        ``long_running``: the handler may run for longer than the group allows between polls
        (a training: hours). It then runs on a worker thread while this consumer pauses its
        partitions and keeps polling, so that it stays in the group, the record is handled
        once, and its offset is committed by the member that handled it."""
        source = self._source_factory(group, [t.name for t in topics])
        return Consumer(
            self,
            source,
            group=group,
            topics=topics,
            handler=handler,
            before_commit=before_commit,
            long_running=long_running,
            rebuilds_state=rebuilds_state,
        )

    def raw_source(self, group: str, topic_names: Sequence[str]) -> Source:
        """Records as they are, undecoded: for reading dead-letter topics and for replay tools.
        Nothing is committed unless the caller commits."""
        return self._source_factory(group, topic_names)

    def close(self) -> None:
        """Flush what was published, then release the backend's connections."""
        try:
            self._producer.flush(self.settings.kafka.delivery_timeout_s)
        finally:
            self._producer.close()
            self._admin.close()

    def __enter__(self) -> EventBus:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _note_batch_output(delivery: Delivery) -> None:
    outputs = _batch_deliveries.get()
    if outputs is not None:
        outputs.append(delivery)


class _BatchPausedError(Exception):
    """A handler's backend is down: stop the batch, commit what finished, redeliver the rest."""


class _HandlerAbandonedError(Exception):
    """The consumer was stopped while a long-running handler ran: its record is not committed."""


class Consumer:
    """One consumer-group member. Call :meth:`poll_once` in a loop, or :meth:`run`."""

    def __init__(
        self,
        bus: EventBus,
        source: Source,
        *,
        group: str,
        topics: Sequence[Topic[Any]],
        handler: Handler,
        before_commit: Callable[[Mapping[TopicPartition, int]], None] | None,
        long_running: bool = False,
        rebuilds_state: bool = False,
    ) -> None:
        self._long_running = long_running
        self._rebuilds_state = rebuilds_state
        self._bus = bus
        self._source = source
        self.group = group
        self._topics = {t.name: t for t in topics}
        self._handler = handler
        self._before_commit = before_commit
        self._settings = bus.settings
        self._metrics = bus._metrics
        self._stop = threading.Event()
        self._run_stop: threading.Event | None = None  # the event run() was given
        # Set once this member has handled every record its partitions held when it joined:
        # a reader that rebuilds state from a topic is ready from then on (rebuilds_state only).
        self.caught_up = threading.Event()

    def assignment(self) -> set[TopicPartition]:
        return self._source.assignment()

    def poll_once(self, timeout_s: float = 1.0) -> int:
        """Handle one batch and commit it. Returns the number of records that were handled."""
        records = self._source.poll(self._settings.max_batch, timeout_s)
        if not records:
            self._note_caught_up()
            return 0
        first: dict[TopicPartition, int] = {}
        done: dict[TopicPartition, int] = {}
        for record in records:
            first.setdefault((record.topic, record.partition), record.offset)
        paused = False
        outputs: list[Delivery] = []
        scope = _batch_deliveries.set(outputs)
        try:
            for record in records:
                self._process(record)
                done[(record.topic, record.partition)] = record.offset + 1
        except _BatchPausedError:
            paused = True
        except _HandlerAbandonedError:
            # Stopping mid-handler: what finished is committed, the rest is delivered again.
            self._finish_batch(first, done, outputs, paused=True)
            return sum(1 for r in records if r.offset < done.get((r.topic, r.partition), -1))
        finally:
            _batch_deliveries.reset(scope)
        self._finish_batch(first, done, outputs, paused)
        if paused:
            self._stop.wait(self._settings.retry_backoff_s)
        else:
            self._note_caught_up()
        return sum(1 for r in records if r.offset < done.get((r.topic, r.partition), -1))

    def _note_caught_up(self) -> None:
        # Only between batches: the source's position is past what poll returned, handled or not.
        if not self._rebuilds_state or self.caught_up.is_set():
            return
        try:
            lag = self._source.lag()
        except InspectloopError as exc:  # the backend is away: not known yet, try next time
            log.debug("group %s: lag unknown: %s", self.group, exc)
            return
        if lag == 0:
            self.caught_up.set()

    def _finish_batch(
        self,
        first: Mapping[TopicPartition, int],
        done: Mapping[TopicPartition, int],
        outputs: Sequence[Delivery],
        paused: bool,
    ) -> None:
        # Outputs first: an offset is committed only once everything its handler published
        # (and every dead letter) is acknowledged. If that fails, nothing is committed and
        # the whole batch is delivered again; outputs that did arrive are published again
        # under the same event ids (handlers derive them from their input), so a reader can
        # drop the copies.
        timeout = self._settings.kafka.delivery_timeout_s
        try:
            self._bus.flush(timeout)
            for delivery in outputs:
                delivery.result(timeout)  # done after the flush: raises if it failed
        except Exception as exc:
            self._source.rewind(first)
            for (topic, partition), offset in first.items():
                redelivered = done.get((topic, partition), offset) - offset
                self._metrics.consumed.labels(
                    topic=topic, group=self.group, outcome="undelivered"
                ).inc(redelivered)
            if isinstance(exc, InspectloopError):
                raise
            raise BackendUnavailableError(f"the batch's outputs were not delivered: {exc}") from exc
        if done:
            if self._before_commit is not None:
                self._before_commit(done)
            self._source.commit(done)
        if paused:
            # Every partition goes back to its first unfinished record (a no-op where the
            # batch finished), so the rest of the batch is delivered again after the pause.
            self._source.rewind({tp: done.get(tp, off) for tp, off in first.items()})

    def _process(self, record: RawRecord) -> None:
        topic = self._topics.get(record.topic)
        if topic is None:  # subscribed topics only; a backend bug if it happens
            raise PermanentError(f"record from unsubscribed topic {record.topic}")
        started = time.perf_counter()
        try:
            event = decode(topic, record)
        except DecodeError as exc:
            self._dead_letter(record, "decode", str(exc), attempts=0)
            return
        attempts = 0
        while True:
            attempts += 1
            try:
                self._call(event)
            except _HandlerAbandonedError:
                raise
            except BackendUnavailableError as exc:
                # Dead-lettering everything while a dependency is down would lose the stream's
                # order and flood the DLQ: pause and redeliver instead.
                log.warning("handler backend unavailable, pausing %s: %s", record.topic, exc)
                self._metrics.consumed.labels(
                    topic=record.topic, group=self.group, outcome="paused"
                ).inc()
                raise _BatchPausedError from exc
            except PermanentError as exc:
                self._dead_letter(record, "permanent", str(exc), attempts)
                return
            except Exception as exc:
                kind = "transient" if isinstance(exc, TransientError) else "unexpected"
                if attempts >= self._settings.max_attempts:
                    self._dead_letter(record, kind, f"{type(exc).__name__}: {exc}", attempts)
                    return
                log.warning(
                    "handler failed (attempt %d of %d) on %s/%d@%d: %s",
                    attempts,
                    self._settings.max_attempts,
                    record.topic,
                    record.partition,
                    record.offset,
                    exc,
                )
                self._stop.wait(self._settings.retry_backoff_s * 2 ** (attempts - 1))
                continue
            self._metrics.consumed.labels(topic=record.topic, group=self.group, outcome="ok").inc()
            self._metrics.handle_seconds.labels(topic=record.topic, group=self.group).observe(
                time.perf_counter() - started
            )
            return

    def _call(self, event: Event[Any]) -> None:
        """The handler on ``event``; for a long-running consumer, on a worker thread while this
        one keeps the group membership alive (see :meth:`EventBus.consumer`)."""
        if not self._long_running:
            self._handler(event)
            return
        failure: list[BaseException] = []

        def work() -> None:
            try:
                self._handler(event)
            except BaseException as exc:  # re-raised on the consumer's thread
                failure.append(exc)

        # The worker runs in this thread's context, so what it publishes is the batch's output.
        context = contextvars.copy_context()
        worker = threading.Thread(
            target=context.run, args=(work,), name=f"{self.group}-handler", daemon=True
        )
        worker.start()
        worker.join(self._settings.keep_alive_s)
        if worker.is_alive():
            self._keep_alive(worker)
        if failure:
            raise failure[0]

    def _keep_alive(self, worker: threading.Thread) -> None:
        """Poll, fetching nothing, until ``worker`` ends. A partition assigned meanwhile (a
        rebalance) is paused too; anything fetched from it before that is given back."""
        paused: set[TopicPartition] = set()
        try:
            while worker.is_alive():
                if self._stop.is_set() or (self._run_stop is not None and self._run_stop.is_set()):
                    # A training may run for an hour: stopping does not wait for it. Its record
                    # is not committed, so the group delivers it again after the restart (and
                    # the trainer resumes from the run's last checkpoint).
                    log.warning(
                        "consumer %s stopping with a handler still running: its record is not "
                        "committed and will be delivered again",
                        self.group,
                    )
                    raise _HandlerAbandonedError
                fresh = self._source.assignment() - paused
                if fresh:
                    self._source.pause(fresh)
                    paused |= fresh
                records = self._source.poll(self._settings.max_batch, 0.0)
                if records:
                    first: dict[TopicPartition, int] = {}
                    for record in records:
                        first.setdefault((record.topic, record.partition), record.offset)
                    self._source.rewind(first)
                worker.join(self._settings.keep_alive_s)
        finally:
            self._source.resume(paused & self._source.assignment())

    def _dead_letter(self, record: RawRecord, kind: str, reason: str, attempts: int) -> None:
        log.error(
            "dead-lettering %s/%d@%d (%s): %s",
            record.topic,
            record.partition,
            record.offset,
            kind,
            reason,
        )
        headers = [
            *record.headers,
            (DLQ_REASON, reason.encode()),
            (DLQ_ERROR_KIND, kind.encode()),
            (DLQ_SOURCE_TOPIC, record.topic.encode()),
            (DLQ_SOURCE_PARTITION, str(record.partition).encode()),
            (DLQ_SOURCE_OFFSET, str(record.offset).encode()),
            (DLQ_GROUP, self.group.encode()),
            (DLQ_ATTEMPTS, str(attempts).encode()),
            (DLQ_FAILED_AT, datetime.now(UTC).isoformat().encode()),
        ]
        # The original record is kept whole; a DLQ record over the limit would be lost, so the
        # limit does not apply here (the original already passed it once).
        delivery = self._bus._producer.send(
            dead_letter_topic(record.topic), record.key, record.value, headers
        )
        _note_batch_output(delivery)
        self._metrics.consumed.labels(topic=record.topic, group=self.group, outcome="dlq").inc()
        self._metrics.dead_lettered.labels(topic=record.topic, kind=kind).inc()

    def run(self, stop: threading.Event | None = None, poll_timeout_s: float = 1.0) -> None:
        """Consume until ``stop`` (or :meth:`stop`) is set; then leave the group cleanly."""
        stop_event = stop or self._stop
        self._run_stop = stop_event
        try:
            while not stop_event.is_set() and not self._stop.is_set():
                try:
                    self.poll_once(poll_timeout_s)
                except TransientError as exc:
                    # The batch was not committed and will be delivered again; keep going.
                    log.warning("consumer %s: %s; retrying", self.group, exc)
                    stop_event.wait(self._settings.retry_backoff_s)
        finally:
            self.close()

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        """Leave the group. Every finished batch was committed already."""
        self._stop.set()
        self._source.close()

    def __enter__(self) -> Consumer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def publish_all(bus: EventBus, items: Iterable[tuple[Topic[Any], Message]]) -> None:
    """Publish several events and wait until all are acknowledged."""
    deliveries = [bus.publish(topic, message) for topic, message in items]
    for delivery in deliveries:
        delivery.result(bus.settings.kafka.delivery_timeout_s)
