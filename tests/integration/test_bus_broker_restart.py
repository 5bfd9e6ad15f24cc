"""A broker that restarts without its log (the local Tansu keeps it in memory): clients recover.

Each test runs its own broker, killed and started again on the same port, as `acs up` does when
the broker dies; `ensure_topics` restores the topics in between, as `acs up` does too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from acs.infra import LocalKafka
from services.bus.events import TOPIC_INBOUND, TOPIC_REPLIES, SessionPlan, encode
from services.bus.kafka import BusCheck, ensure_topics, make_producer, topic_name
from services.common.settings import Settings
from services.gateway.replies import CHECK_SECONDS, ReplyChannel

pytestmark = pytest.mark.integration


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[LocalKafka]:
    server = LocalKafka(tmp_path / "kafka")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def bus(broker: LocalKafka, unique_name: str) -> Settings:
    return Settings(kafka_bootstrap=broker.bootstrap, kafka_partitions=2, kafka_topic_prefix=f"{unique_name}.")


async def _until(condition: Callable[[], bool], within: float) -> None:
    async with asyncio.timeout(within):
        while not condition():  # noqa: ASYNC110 - polls another task's effects
            await asyncio.sleep(0.05)


def plan(session: str) -> SessionPlan:
    return SessionPlan(device_id="d", session_id=session, gateway_id="gw", in_reply_to="e")


async def test_the_reply_channel_reads_again_from_the_start_of_a_partition_the_broker_lost(
        broker: LocalKafka, bus: Settings) -> None:
    await ensure_topics(bus, [TOPIC_INBOUND, TOPIC_REPLIES])
    topic = topic_name(bus, TOPIC_REPLIES)
    producer = make_producer(bus)
    await producer.start()
    delivered: list[SessionPlan] = []
    channel = ReplyChannel(bus, "gw", delivered.append)
    await channel.start()
    check = BusCheck(bus, [TOPIC_INBOUND, TOPIC_REPLIES], cache_seconds=0)
    try:
        partition = int(channel.reply_to.rpartition(":")[2])
        for i in range(20):  # our position moves well past what the restarted broker will hold
            await producer.send_and_wait(topic, encode(plan(f"before-{i}")), partition=partition)
        await _until(lambda: len(delivered) == 20, 10)
        assert channel.healthy() and await check()
        await asyncio.sleep(2 * CHECK_SECONDS)  # the watchdog has seen the partition's end

        broker.stop()
        await _until(lambda: not channel.healthy(), 15)  # readiness sees the broken path
        assert not await check()
        broker.start()
        assert not await check()  # the broker answers, but the topics are gone
        await ensure_topics(bus, [TOPIC_INBOUND, TOPIC_REPLIES])
        await _until(lambda: channel.healthy(), 15)
        assert await check()

        async with asyncio.timeout(20):
            while True:  # the producer reconnects on its own; it may take a few tries
                try:
                    await asyncio.wait_for(producer.send_and_wait(topic, encode(plan("after")),
                                                                  partition=partition), 5)
                    break
                except Exception:  # noqa: BLE001 - not connected yet
                    await asyncio.sleep(0.5)
        # Without the watchdog the channel waits at offset 20 while the plan is at offset 0.
        await _until(lambda: any(p.session_id == "after" for p in delivered), 10)
    finally:
        await channel.stop()
        await producer.stop()
