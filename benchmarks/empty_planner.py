"""An orchestrator stand-in for the gateway benchmark: answers every Inform with an empty plan.

It isolates the gateway's own cost (parsing, Kafka round trip, locks) from any planning work.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.bus.events import TOPIC_INBOUND, TOPIC_REPLIES, InformReceived, SessionPlan, decode_inbound, encode
from services.bus.kafka import ensure_topics, make_consumer, make_producer, topic_name
from services.common.settings import Settings


async def main() -> None:
    settings = Settings()
    await ensure_topics(settings)
    consumer = make_consumer(settings, TOPIC_INBOUND, group_id="bench-empty-planner",
                             auto_offset_reset="latest", session_timeout_ms=2000, heartbeat_interval_ms=500)
    producer = make_producer(settings, linger_ms=0)
    await consumer.start()
    await producer.start()
    replies = topic_name(settings, TOPIC_REPLIES)
    try:
        while True:
            batches = await consumer.getmany(timeout_ms=100)
            for records in batches.values():
                for record in records:
                    event = decode_inbound(record.value)
                    if isinstance(event, InformReceived):
                        plan = SessionPlan(device_id=event.device_id, session_id=event.session_id,
                                           gateway_id=event.gateway_id, in_reply_to=event.event_id)
                        partition = int(event.reply_to.rsplit(":", 1)[1])
                        await producer.send(replies, encode(plan), partition=partition)
    finally:
        await consumer.stop()
        await producer.stop()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
