"""Kafka transport (kafka-python): an idempotent acks=all producer and consumer-group sources."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

from kafka import ConsumerRebalanceListener, KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import ConfigResource, ConfigResourceType, NewTopic
from kafka.errors import (
    CommitFailedError,
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    TopicAlreadyExistsError,
)
from kafka.structs import OffsetAndMetadata
from kafka.structs import TopicPartition as KafkaTopicPartition

from inspectloop.core.bus.base import RecordMetadata, TopicPartition
from inspectloop.core.errors import (
    BackendUnavailableError,
    RecordTooLargeError,
    TransientError,
)
from inspectloop.core.events import Headers, RawRecord
from inspectloop.core.settings import BusSettings, KafkaSettings

log = logging.getLogger(__name__)

# Kafka frames each record in a batch; the broker's limit (message.max.bytes) counts the
# frame too, so the producer may send a little more than the bus's record limit.
_FRAMING_ALLOWANCE_BYTES = 64 * 1024


def _translate(exc: BaseException) -> Exception:
    if isinstance(exc, MessageSizeTooLargeError):
        return RecordTooLargeError(f"broker refused the record as too large: {exc}")
    if isinstance(exc, KafkaTimeoutError | KafkaConnectionError):
        return BackendUnavailableError(f"Kafka did not acknowledge in time: {exc}")
    return TransientError(f"Kafka error: {exc}")


class KafkaDelivery:
    def __init__(self, future: Any) -> None:
        self._future = future

    def result(self, timeout: float | None = None) -> RecordMetadata:
        try:
            meta = self._future.get(timeout=timeout)
        except KafkaError as exc:
            raise _translate(exc) from exc
        return RecordMetadata(meta.topic, meta.partition, meta.offset)

    def done(self) -> bool:
        return bool(self._future.is_done)


def _common(settings: KafkaSettings) -> dict[str, Any]:
    return {
        "bootstrap_servers": settings.servers,
        "client_id": settings.client_id,
        "security_protocol": settings.security_protocol,
        "request_timeout_ms": settings.request_timeout_ms,
    }


class KafkaProducerAdapter:
    """Idempotent producer with acks=all: an acknowledged record is on every in-sync replica,
    and the broker drops the duplicates that the producer's own retries would create."""

    def __init__(self, bus: BusSettings) -> None:
        settings = bus.kafka
        try:
            self._producer = KafkaProducer(
                **_common(settings),
                acks="all",
                enable_idempotence=True,
                # <= 5 in flight keeps per-partition order with idempotence on.
                max_in_flight_requests_per_connection=5,
                linger_ms=5,
                batch_size=256 * 1024,
                max_request_size=bus.max_record_bytes + _FRAMING_ALLOWANCE_BYTES,
                delivery_timeout_ms=int(settings.delivery_timeout_s * 1000),
                max_block_ms=int(settings.delivery_timeout_s * 1000),
            )
        except KafkaError as exc:
            raise _translate(exc) from exc

    def send(self, topic: str, key: bytes | None, value: bytes, headers: Headers) -> KafkaDelivery:
        try:
            future = self._producer.send(topic, key=key, value=value, headers=headers)
        except KafkaError as exc:
            raise _translate(exc) from exc
        return KafkaDelivery(future)

    def flush(self, timeout: float | None = None) -> None:
        try:
            self._producer.flush(timeout=timeout)
        except KafkaError as exc:
            raise _translate(exc) from exc

    def close(self) -> None:
        self._producer.close()


class _AssignmentLog(ConsumerRebalanceListener):  # type: ignore[misc]
    """Nothing is pending when Kafka rebalances (a batch is committed before the next poll,
    and rebalances happen inside poll), so the listener only reports the change."""

    def __init__(self, group: str) -> None:
        self._group = group

    def on_partitions_revoked(self, revoked: Any) -> None:
        if revoked:
            log.info("group %s: partitions revoked %s", self._group, sorted(revoked))

    def on_partitions_assigned(self, assigned: Any) -> None:
        log.info("group %s: partitions assigned %s", self._group, sorted(assigned))


class KafkaSource:
    def __init__(self, bus: BusSettings, group: str, topics: Sequence[str]) -> None:
        settings = bus.kafka
        self._group = group
        try:
            self._consumer = KafkaConsumer(
                **_common(settings),
                group_id=group,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                max_poll_records=bus.max_batch,
                session_timeout_ms=settings.session_timeout_ms,
                heartbeat_interval_ms=max(100, settings.session_timeout_ms // 3),
                max_poll_interval_ms=settings.max_poll_interval_ms,
                fetch_max_bytes=max(52_428_800, bus.max_record_bytes * 2),
                max_partition_fetch_bytes=max(1_048_576, bus.max_record_bytes * 2),
                allow_auto_create_topics=False,
            )
        except KafkaError as exc:
            raise _translate(exc) from exc
        self._consumer.subscribe(list(topics), listener=_AssignmentLog(group))

    def poll(self, max_records: int, timeout_s: float) -> list[RawRecord]:
        try:
            batches = self._consumer.poll(timeout_ms=int(timeout_s * 1000), max_records=max_records)
        except KafkaError as exc:
            raise _translate(exc) from exc
        records: list[RawRecord] = []
        for tp, messages in batches.items():
            records.extend(
                RawRecord(
                    tp.topic,
                    tp.partition,
                    m.offset,
                    m.key,
                    m.value if m.value is not None else b"",
                    [(k, v if v is not None else b"") for k, v in (m.headers or [])],
                )
                for m in messages
            )
        return records

    def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        try:
            self._consumer.commit(
                {
                    KafkaTopicPartition(t, p): OffsetAndMetadata(o, "", -1)
                    for (t, p), o in offsets.items()
                }
            )
        except CommitFailedError as exc:
            # The partitions moved to another member during the batch: it will start from
            # the last committed offset and see these records again (at-least-once).
            log.warning("group %s: commit refused after a rebalance: %s", self._group, exc)
        except KafkaError as exc:
            raise _translate(exc) from exc

    def rewind(self, offsets: Mapping[TopicPartition, int]) -> None:
        assigned = self._consumer.assignment()
        for (topic, partition), offset in offsets.items():
            tp = KafkaTopicPartition(topic, partition)
            if tp in assigned:
                self._consumer.seek(tp, offset)

    def lag(self) -> int | None:
        assigned = list(self._consumer.assignment())
        if not assigned:
            return None
        # Short: this runs between batches on the consumer's thread; unknown is tried again.
        timeout_ms = min(5_000, self._consumer.config["request_timeout_ms"])
        try:
            ends = self._consumer.end_offsets(assigned, timeout_ms=timeout_ms)
            positions = {tp: self._consumer.position(tp, timeout_ms=timeout_ms) for tp in assigned}
        except KafkaError as exc:
            raise _translate(exc) from exc
        if any(position is None for position in positions.values()):
            return None  # not resolved yet: unknown, not zero
        return sum(max(0, int(ends[tp]) - int(positions[tp])) for tp in assigned)

    def pause(self, partitions: Iterable[TopicPartition]) -> None:
        self._consumer.pause(*(KafkaTopicPartition(t, p) for t, p in partitions))

    def resume(self, partitions: Iterable[TopicPartition]) -> None:
        self._consumer.resume(*(KafkaTopicPartition(t, p) for t, p in partitions))

    def assignment(self) -> set[TopicPartition]:
        return {(tp.topic, tp.partition) for tp in self._consumer.assignment()}

    def close(self) -> None:
        # autocommit=False: every finished batch was committed already; closing leaves the group
        # at once, so the others rebalance without waiting for the session to time out.
        self._consumer.close(autocommit=False)


class KafkaAdmin:
    def __init__(self, bus: BusSettings) -> None:
        self._settings = bus.kafka
        self._client: KafkaAdminClient | None = None

    def _admin(self) -> KafkaAdminClient:
        if self._client is None:
            try:
                self._client = KafkaAdminClient(**_common(self._settings))
            except KafkaError as exc:
                raise _translate(exc) from exc
        return self._client

    def create_topics(
        self, names: Sequence[str], partitions: int, *, compacted: Collection[str] = ()
    ) -> None:
        admin = self._admin()
        existing = set(admin.list_topics())
        missing = [n for n in names if n not in existing]
        for name in missing:
            configs = {"cleanup.policy": "compact"} if name in compacted else {}
            # Another service may create it meanwhile: fine.
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics(
                    [
                        NewTopic(
                            name,
                            partitions,
                            self._settings.replication_factor,
                            topic_configs=configs,
                        )
                    ]
                )
        # Topics created by an older release were not compacted: set just that key
        # (incrementally, so an operator's other settings on the topic stay as they are). Only
        # where it is missing, so that a routine start needs no right to alter topics.
        upgraded = self.not_compacted(sorted(n for n in compacted if n in existing))
        if upgraded:
            try:
                results = admin.alter_configs(
                    [
                        ConfigResource(ConfigResourceType.TOPIC, n, {"cleanup.policy": "compact"})
                        for n in upgraded
                    ],
                    incremental=True,
                )
            except KafkaError as exc:
                raise _translate(exc) from exc
            refused = {n: r for n, r in results.get("topic", {}).items() if r != "OK"}
            if refused:
                raise BackendUnavailableError(f"Kafka refused to compact topics: {refused}")
        # Topic creation is asynchronous in the cluster; wait until the metadata shows them.
        deadline = time.monotonic() + self._settings.request_timeout_ms / 1000
        while missing and time.monotonic() < deadline:
            missing = [n for n in missing if n not in set(admin.list_topics())]
            if missing:
                time.sleep(0.1)
        if missing:
            raise BackendUnavailableError(f"topics not visible after creation: {missing}")

    def not_compacted(self, names: Sequence[str]) -> list[str]:
        """Those of the existing topics ``names`` whose cleanup policy does not compact."""
        if not names:
            return []
        try:
            described = self._admin().describe_configs(
                [
                    ConfigResource(ConfigResourceType.TOPIC, n, {"cleanup.policy": None})
                    for n in names
                ],
                config_filter="all",
            )
        except KafkaError as exc:
            raise _translate(exc) from exc
        topics = described.get("topic", {})
        return [
            n
            for n in names
            if "compact" not in str(topics.get(n, {}).get("cleanup.policy", {}).get("value", ""))
        ]

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
