"""The gateway's reply channel on a real broker: it moves to the emptiest partition and misses nothing."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from services.bus.events import TOPIC_REPLIES, SessionPlan, encode
from services.bus.kafka import ensure_topics, make_producer, topic_name
from services.common.settings import Settings
from services.gateway.replies import ReplyChannel, next_partition, reply_partition

pytestmark = pytest.mark.integration


def test_the_next_partition_is_the_emptiest_then_the_first_from_the_preferred_one() -> None:
    assert next_partition({0: 5, 1: 2, 2: 2, 3: 9}, preferred=2) == 2
    assert next_partition({0: 5, 1: 2, 2: 2, 3: 9}, preferred=3) == 1
    assert next_partition({0: 0, 1: 0}, preferred=1, avoid=1) == 0
    assert next_partition({0: 7}, preferred=0, avoid=0) == 0  # one partition: it stays


async def _until(condition: Callable[[], bool], within: float = 10.0) -> None:
    async with asyncio.timeout(within):
        while not condition():  # noqa: ASYNC110 - polls another task's effects
            await asyncio.sleep(0.02)


async def test_the_channel_moves_on_after_enough_records_and_still_reads_the_partition_it_left(
        settings: Settings, kafka_bootstrap: str) -> None:
    await ensure_topics(settings, [TOPIC_REPLIES])
    topic = topic_name(settings, TOPIC_REPLIES)
    producer = make_producer(settings)
    await producer.start()
    # Another gateway's plans fill the partition our id hashes to: we start elsewhere.
    crowded = reply_partition("gw-a", settings.kafka_partitions)
    for _ in range(3):
        await producer.send_and_wait(topic, encode(SessionPlan(device_id="d", session_id="x", gateway_id="gw-b",
                                                                in_reply_to="e")), partition=crowded)
    delivered: list[SessionPlan] = []
    channel = ReplyChannel(settings, "gw-a", delivered.append, rotate_after=4)
    await channel.start()
    try:
        first = int(channel.reply_to.rpartition(":")[2])
        assert first != crowded

        async def plan(session: str, partition: int) -> None:
            await producer.send_and_wait(topic, encode(SessionPlan(
                device_id="d", session_id=session, gateway_id="gw-a", in_reply_to="e")), partition=partition)

        for i in range(4):  # the fourth record on its partition moves the channel on
            await plan(f"s{i}", first)
        await _until(lambda: channel.reply_to != f"{TOPIC_REPLIES}:{first}")
        second = int(channel.reply_to.rpartition(":")[2])
        assert second not in (first, crowded)  # the emptiest: neither ours before nor the crowded one
        await plan("late", first)  # a session begun before the move is still answered there
        await plan("new", second)
        await _until(lambda: len(delivered) == 6)
        assert [p.session_id for p in delivered[:4]] == ["s0", "s1", "s2", "s3"]
        # Two partitions: no order between them (a session's plans all go to one).
        assert {p.session_id for p in delivered[4:]} == {"late", "new"}
    finally:
        await channel.stop()
        await producer.stop()
