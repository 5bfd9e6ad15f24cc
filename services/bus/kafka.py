"""Kafka plumbing every service shares: producers, consumers, topics, a readiness probe.

Producers always use ``acks=all``: a message the broker acknowledged survives a broker loss,
which is what lets the gateway answer an Inform only after its event is safe.

No client of ours ever creates a topic by asking for it. A Kafka metadata request carries
``allow_auto_topic_creation``, and brokers that honour it (Apache Kafka with
``auto.create.topics.enable``, Tansu always) create a missing topic with their default layout:
after a broker restart that lost its topics, the first producer or consumer to ask re-created
them with 4 partitions instead of 12. aiokafka (up to 0.14) always sends ``true`` and has no
option for it, so this module makes every metadata request of the process send ``false``
(``_refuse_auto_creation``). Topics are created only by ``ensure_topics`` (``acs topics``,
``acs up``), with their layout; a publish to a topic that does not exist fails.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import aiokafka.admin.client
import aiokafka.client
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from aiokafka.helpers import create_ssl_context
from aiokafka.protocol.metadata import MetadataRequest

from services.bus.events import ALL_TOPICS, TOPIC_RETENTION_MS
from services.common.settings import Settings

log = logging.getLogger(__name__)

# Consumers look for topics that appear (re-created after a broker lost them) this often; the
# default of 5 minutes would leave a consumer idle that long. A metadata request is cheap.
CONSUMER_METADATA_MAX_AGE_MS = 5_000


class _MetadataWithoutAutoCreation(MetadataRequest):
    """A metadata request that never asks the broker to create the topics it names."""

    def __init__(self, topics: list[str] | None = None,
                 allow_auto_topic_creation: bool | None = False) -> None:
        super().__init__(topics, allow_auto_topic_creation=bool(allow_auto_topic_creation))


def _refuse_auto_creation() -> None:
    """Make every aiokafka client of this process send ``allow_auto_topic_creation=false``.

    Both modules that build metadata requests (the client behind producers and consumers, and
    the admin client) name the class at call time, so replacing it here covers every request.
    A test (tests/integration/test_bus_topics.py) checks on the real broker that a producer, a
    consumer and the admin client leave a missing topic missing.
    """
    for module in (aiokafka.client, aiokafka.admin.client):
        if getattr(module, "MetadataRequest", None) not in (MetadataRequest, _MetadataWithoutAutoCreation):
            raise RuntimeError(f"{module.__name__}.MetadataRequest is not the one this module replaces; "
                               "check services/bus/kafka.py against the installed aiokafka")
        module.MetadataRequest = _MetadataWithoutAutoCreation  # type: ignore[attr-defined,misc]


_refuse_auto_creation()


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


def make_consumer(settings: Settings, *topics: str, group_id: str | None,
                  listener: ConsumerRebalanceListener | None = None, **overrides: object) -> AIOKafkaConsumer:
    """A consumer of ``topics``; with a ``listener``, told of every partition it loses or gets.

    A group consumer rejoins by itself after a broker restart (the coordinator forgot it), and
    the listener hears of it: state kept per partition (offsets handled but not committed)
    belongs to the log before the restart and must be dropped, or it would be committed into
    the new one.
    """
    options: dict[str, object] = {
        **client_options(settings),
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "session_timeout_ms": settings.kafka_session_timeout_ms,
        "heartbeat_interval_ms": min(1_000, settings.kafka_session_timeout_ms // 3),
        "max_poll_records": 500,
        # Sessions wait on this bus. Kafka answers a waiting fetch as soon as data arrives; Tansu
        # (the local broker) notices data only when it next looks (about 200 ms after a message
        # with the default 500 ms wait, 5 ms with 20), so the wait must be short. Consumers off
        # the session path ask for longer.
        "fetch_max_wait_ms": 20,
        "metadata_max_age_ms": CONSUMER_METADATA_MAX_AGE_MS,
    }
    options.update(overrides)
    names = [topic_name(settings, t) for t in topics]
    if listener is None:
        return AIOKafkaConsumer(*names, **options)  # type: ignore[arg-type]
    consumer = AIOKafkaConsumer(**options)  # type: ignore[arg-type]
    consumer.subscribe(names, listener=listener)
    return consumer


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


async def topic_layout(settings: Settings, topics: Iterable[str] = ALL_TOPICS,
                       probe_seconds: float = 5.0) -> dict[str, int]:
    """Partitions of each topic (unprefixed name -> count; 0 for a topic that does not exist).

    Raises ``KafkaError`` (or ``TimeoutError``) when the broker does not answer.
    """
    wanted = list(topics)
    admin = AIOKafkaAdminClient(**client_options(settings),  # type: ignore[arg-type]
                                request_timeout_ms=int(probe_seconds * 1000))
    try:
        await asyncio.wait_for(admin.start(), probe_seconds)
        described = await asyncio.wait_for(admin.describe_topics([topic_name(settings, t) for t in wanted]),
                                           probe_seconds)
    finally:
        try:
            await admin.close()
        except Exception:
            log.debug("closing admin client failed", exc_info=True)
    by_name = {entry["topic"]: entry for entry in described}
    layout: dict[str, int] = {}
    for topic in wanted:
        entry = by_name.get(topic_name(settings, topic))
        ok = entry is not None and entry["error_code"] == 0
        partitions = entry["partitions"] if ok and entry is not None else []
        # A partition without a leader cannot take a message: count only those that can.
        layout[topic] = sum(1 for p in partitions if p["error_code"] == 0 and p["leader"] >= 0)
    return layout


@dataclass
class BusCheck:
    """Readiness of a service's bus path: the broker answers and every topic it uses is there.

    ``/readyz`` calls it; a service whose topics are gone (a broker that lost them) or whose
    broker does not answer is not ready, whatever its own loops think. The answer is kept for
    ``cache_seconds`` so that frequent probes cost the broker one metadata request per interval.
    """

    settings: Settings
    topics: Sequence[str]
    cache_seconds: float = 1.0
    problem: str | None = field(default="not checked yet", init=False)
    _checked_at: float = field(default=-1e9, init=False)

    async def __call__(self) -> bool:
        if time.monotonic() - self._checked_at >= self.cache_seconds:
            self.problem = await self._probe()
            self._checked_at = time.monotonic()
        return self.problem is None

    async def _probe(self) -> str | None:
        try:
            layout = await topic_layout(self.settings, self.topics, probe_seconds=2.0)
        except (KafkaError, OSError, TimeoutError) as exc:
            return f"Kafka does not answer ({type(exc).__name__})"
        missing = [topic_name(self.settings, t) for t, count in layout.items() if count == 0]
        return f"missing topics: {', '.join(missing)}" if missing else None


async def wait_for_topics(settings: Settings, topics: Iterable[str], within: float) -> None:
    """Wait until every topic exists; raise ``ConfigError`` naming the missing ones after ``within``.

    Services never create topics (``acs topics`` does, with their layout); at start they wait for
    them a while, as for the broker itself.
    """
    from services.common.preflight import ConfigError

    wanted = list(topics)
    deadline = time.monotonic() + within
    missing: list[str] = []
    while True:
        try:
            layout = await topic_layout(settings, wanted, probe_seconds=2.0)
            missing = [topic_name(settings, t) for t, count in layout.items() if count == 0]
        except (KafkaError, OSError, TimeoutError):
            missing = [topic_name(settings, t) for t in wanted]
        if not missing or time.monotonic() >= deadline:
            break
        await asyncio.sleep(0.5)
    if missing:
        raise ConfigError(f"Kafka topics missing: {', '.join(missing)}; create them with `acs topics` "
                          f"(ACS_KAFKA_PARTITIONS={settings.kafka_partitions})")


async def rewind_lost_partitions(consumer: AIOKafkaConsumer, known_ends: dict[TopicPartition, int],
                                 ) -> list[TopicPartition]:
    """Read again from its start every assigned partition whose end moved back since last time.

    A log never shrinks, unless the broker lost it (the local Tansu keeps it in memory; a Kafka
    cluster after an unclean leader election): it then numbers from where it now is, and answers
    a fetch at our old position with nothing rather than an error, so a consumer there would
    wait until the partition grew past it, skipping everything written meanwhile. The position
    alone would not tell: Tansu reports an end below the last records of a partition (the base
    offset of its last batch), so a consumer that read everything is often "past the end".
    ``known_ends`` keeps the ends seen by the previous call. Not seen: a log lost before any
    check saw it grow (nothing to compare with), or one that grew back past its old end before
    the first check after the restart; a group consumer is covered anyway (it rejoins, and the
    restarted broker has no committed offsets for it), the reply channel misses those plans and
    their sessions end with 204 after the plan timeout.
    """
    assigned = list(consumer.assignment())
    if not assigned:
        return []
    ends = await consumer.end_offsets(assigned)
    lost = [tp for tp in assigned if ends[tp] < known_ends.get(tp, -1) and tp in consumer.assignment()]
    for tp in list(known_ends):
        if tp not in ends:
            del known_ends[tp]
    known_ends.update(ends)
    if lost:
        starts = await consumer.beginning_offsets(lost)
        for tp in lost:
            log.warning("the broker lost messages of a partition (its end moved back); reading it again "
                        "from its start", extra={"topic": tp.topic, "partition": tp.partition,
                                                 "end_offset": ends[tp]})
            consumer.seek(tp, starts[tp])
    return lost


class LostLogWatchdog:
    """Runs ``rewind_lost_partitions`` every ``interval`` seconds beside a consumer's own loop."""

    def __init__(self, consumer: AIOKafkaConsumer, interval: float = 1.0,
                 on_rewind: Callable[[list[TopicPartition]], None] | None = None) -> None:
        self.consumer = consumer
        self.interval = interval
        self.on_rewind = on_rewind
        self.checked_ok_at = time.monotonic()
        self._ends: dict[TopicPartition, int] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="kafka-lost-log-watchdog")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def check(self) -> list[TopicPartition]:
        lost = await asyncio.wait_for(rewind_lost_partitions(self.consumer, self._ends), 10)
        if lost and self.on_rewind is not None:
            self.on_rewind(lost)
        self.checked_ok_at = time.monotonic()
        return lost

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.check()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the broker is away: retried next round
                log.debug("lost-log check failed: %r", exc)
