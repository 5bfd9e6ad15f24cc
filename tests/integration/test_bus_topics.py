"""No client of ours creates a topic by naming it; readiness sees missing topics (real broker)."""

from __future__ import annotations

import asyncio

import pytest

from services.bus.events import TOPIC_INBOUND, TOPIC_REPLIES
from services.bus.kafka import (
    BusCheck,
    ensure_topics,
    make_consumer,
    make_producer,
    topic_layout,
    topic_name,
    topic_partitions,
    wait_for_topics,
)
from services.common.preflight import ConfigError
from services.common.settings import Settings

pytestmark = pytest.mark.integration


async def test_a_producer_a_consumer_and_the_admin_client_leave_a_missing_topic_missing(
        settings: Settings, kafka_bootstrap: str) -> None:
    # Tansu (and Kafka with auto.create.topics.enable) creates a topic that a metadata request
    # names, with 4 partitions, unless the request says not to.
    producer = make_producer(settings, request_timeout_ms=2000)
    await producer.start()
    try:
        with pytest.raises(Exception):  # noqa: B017 - aiokafka's timeout error, or ours
            await asyncio.wait_for(producer.send_and_wait(topic_name(settings, TOPIC_INBOUND), b"x"), 3)
    finally:
        await producer.stop()
    consumer = make_consumer(settings, TOPIC_REPLIES, group_id=f"{settings.kafka_topic_prefix}g",
                             request_timeout_ms=2000)
    try:
        # aiokafka waits for the subscribed topic's metadata, then gives up: it does not exist.
        with pytest.raises(Exception):  # noqa: B017 - UnknownTopicOrPartitionError
            await consumer.start()
    finally:
        await consumer.stop()
    with pytest.raises(Exception):  # noqa: B017 - the topic has no partitions: it does not exist
        await asyncio.wait_for(topic_partitions(settings, TOPIC_REPLIES), 10)
    assert await topic_layout(settings, [TOPIC_INBOUND, TOPIC_REPLIES]) == {TOPIC_INBOUND: 0, TOPIC_REPLIES: 0}


async def test_topics_made_by_ensure_topics_have_its_layout_and_make_the_bus_check_pass(
        settings: Settings, kafka_bootstrap: str) -> None:
    check = BusCheck(settings, [TOPIC_INBOUND, TOPIC_REPLIES], cache_seconds=0)
    assert not await check()
    assert check.problem is not None and topic_name(settings, TOPIC_INBOUND) in check.problem
    with pytest.raises(ConfigError, match="acs topics"):
        await wait_for_topics(settings, [TOPIC_INBOUND], within=0.5)

    await ensure_topics(settings, [TOPIC_INBOUND, TOPIC_REPLIES])
    assert await topic_layout(settings, [TOPIC_INBOUND, TOPIC_REPLIES]) == {
        TOPIC_INBOUND: settings.kafka_partitions, TOPIC_REPLIES: settings.kafka_partitions}
    assert await check()
    assert check.problem is None
    await wait_for_topics(settings, [TOPIC_INBOUND, TOPIC_REPLIES], within=0.5)


async def test_the_bus_check_fails_when_the_broker_does_not_answer(settings: Settings) -> None:
    check = BusCheck(settings.model_copy(update={"kafka_bootstrap": "127.0.0.1:1"}), [TOPIC_INBOUND])
    assert not await check()
    assert check.problem is not None and "does not answer" in check.problem


async def test_acs_topics_creates_the_missing_topics_and_names_one_with_another_layout(
        settings: Settings, kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from acs.cli import main

    await ensure_topics(settings, [TOPIC_REPLIES], partitions=1)  # made by someone else, otherwise
    monkeypatch.setenv("ACS_KAFKA_BOOTSTRAP", settings.kafka_bootstrap)
    monkeypatch.setenv("ACS_KAFKA_TOPIC_PREFIX", settings.kafka_topic_prefix)
    monkeypatch.setenv("ACS_KAFKA_PARTITIONS", str(settings.kafka_partitions))
    assert await asyncio.to_thread(main, ["topics", "--ensure"]) == 0
    out, err = capsys.readouterr()
    assert topic_name(settings, TOPIC_INBOUND) in out
    assert f"{TOPIC_REPLIES} has 1 partitions, not ACS_KAFKA_PARTITIONS={settings.kafka_partitions}" in err
    layout = await topic_layout(settings)
    assert layout.pop(TOPIC_REPLIES) == 1
    assert set(layout.values()) == {settings.kafka_partitions}
