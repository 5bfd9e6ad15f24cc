"""Kafka plumbing every service shares: producers, consumers, topics, a readiness probe.

Producers always use ``acks=all``: a message the broker acknowledged survives a broker loss,
which is what lets the gateway answer an Inform only after its event is safe.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from aiokafka.helpers import create_ssl_context

from services.bus.events import ALL_TOPICS, TOPIC_RETENTION_MS
from services.common.settings import Settings

log = logging.getLogger(__name__)


def topic_name(settings: Settings, topic: str) -> str:
    """The real topic name: a prefix lets several deployments (or test runs) share a cluster."""
    return f"{settings.kafka_topic_prefix}{topic}"


def client_options(settings: Settings) -> dict[str, object]:
    """Where and how every Kafka client of the ACS connects: brokers, TLS, SASL."""
    options: dict[str, object] = {"bootstrap_servers": settings.kafka_bootstrap,
                                  "security_protocol": settings.kafka_security_protocol}
    if settings.kafka_security_protocol in ("SSL", "SASL_SSL"):
        options["ssl_context"] = create_ssl_context(cafile=settings.kafka_ssl_cafile,
                                                    certfile=settings.kafka_ssl_certfile,
                                                    keyfile=settings.kafka_ssl_keyfile)
    if settings.kafka_security_protocol.startswith("SASL_"):
        options.update(sasl_mechanism=settings.kafka_sasl_mechanism,
                       sasl_plain_username=settings.kafka_sasl_username,
                       sasl_plain_password=settings.kafka_sasl_password)
    return options


def make_producer(settings: Settings, **overrides: object) -> AIOKafkaProducer:
    options: dict[str, object] = {
        **client_options(settings),
        "acks": "all",
        "enable_idempotence": settings.kafka_idempotence,
        "linger_ms": 2,
        "request_timeout_ms": 10_000,
        "max_batch_size": 256 * 1024,
    }
    options.update(overrides)
    return AIOKafkaProducer(**options)  # type: ignore[arg-type]


def make_consumer(settings: Settings, *topics: str, group_id: str | None, **overrides: object,
                  ) -> AIOKafkaConsumer:
    options: dict[str, object] = {
        **client_options(settings),
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "session_timeout_ms": 10_000,
        "heartbeat_interval_ms": 1_000,
        "max_poll_records": 500,
        # Sessions wait on this bus. Kafka answers a waiting fetch as soon as data arrives; Tansu
        # (the local broker) notices data only when it next looks (about 200 ms after a message
        # with the default 500 ms wait, 5 ms with 20), so the wait must be short. Consumers off
        # the session path ask for longer.
        "fetch_max_wait_ms": 20,
    }
    options.update(overrides)
    return AIOKafkaConsumer(*(topic_name(settings, t) for t in topics), **options)  # type: ignore[arg-type]


async def ensure_topics(settings: Settings, topics: Iterable[str] = ALL_TOPICS,
                        partitions: int | None = None) -> list[str]:
    """Create the topics that do not exist yet; returns the names created."""
    admin = AIOKafkaAdminClient(**client_options(settings), request_timeout_ms=10_000)  # type: ignore[arg-type]
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [topic_name(settings, t) for t in topics]
        missing = [name for name in wanted if name not in existing]
        if not missing:
            return []
        retention = {topic_name(settings, t): ms for t, ms in TOPIC_RETENTION_MS.items()}
        new_topics = [NewTopic(name, partitions or settings.kafka_partitions, settings.kafka_replication,
                               topic_configs={"retention.ms": str(retention[name])} if name in retention else {})
                      for name in missing]
        try:
            await admin.create_topics(new_topics)
        except TopicAlreadyExistsError:
            pass  # Another instance created it between our listing and our request.
        return missing
    finally:
        await admin.close()


async def topic_partitions(settings: Settings, topic: str) -> int:
    """How many partitions a topic has (it must exist: see ``ensure_topics``)."""
    admin = AIOKafkaAdminClient(**client_options(settings), request_timeout_ms=10_000)  # type: ignore[arg-type]
    await admin.start()
    try:
        name = topic_name(settings, topic)
        for _ in range(50):
            described = await admin.describe_topics([name])
            partitions = described[0].get("partitions") if described else None
            if partitions:
                return len(partitions)
            await asyncio.sleep(0.1)  # a topic just created may not have its leaders yet
        raise KafkaError(f"topic {name} has no partitions")
    finally:
        await admin.close()


async def kafka_reachable(settings: Settings, probe_seconds: float = 2.0) -> bool:
    """True when the bootstrap servers answer a metadata request."""
    admin = AIOKafkaAdminClient(**client_options(settings),  # type: ignore[arg-type]
                                request_timeout_ms=int(probe_seconds * 1000))
    try:
        await asyncio.wait_for(admin.start(), probe_seconds)
        await asyncio.wait_for(admin.list_topics(), probe_seconds)
        return True
    except (KafkaError, OSError, TimeoutError):
        return False
    finally:
        try:
            await admin.close()
        except Exception:
            log.debug("closing admin client failed", exc_info=True)
