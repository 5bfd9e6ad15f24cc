"""Everything the orchestrator process holds, built in one place and closed in reverse order."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import httpx
from pymongo import AsyncMongoClient

from services.bus.events import TOPIC_DEVICE_EVENTS, TOPIC_INBOUND, TOPIC_REPLIES, DeviceEvent, SessionPlan
from services.bus.kafka import BusCheck, make_producer
from services.common.apikeys import ApiKeyAuth
from services.common.settings import Settings
from services.orchestrator.connreq import ConnectionRequester
from services.orchestrator.consumer import InboundConsumer, KafkaPublisher, sweep_forever
from services.orchestrator.engine import Engine, PolicyCache
from services.orchestrator.jobs import JobConfig, JobEngine
from services.orchestrator.store import Store


class NullPublisher:
    """For an API-only runtime (tests, tools): plans and events go nowhere."""

    async def plan(self, reply_to: str, plan: SessionPlan) -> None:
        return None

    async def device_events(self, events: list[DeviceEvent]) -> None:
        return None


class OrchestratorRuntime:
    def __init__(self, settings: Settings, *, with_kafka: bool = True, http: httpx.AsyncClient | None = None,
                 consumer_options: dict[str, Any] | None = None, sweep_interval: float | None = None,
                 job_config: JobConfig | None = None) -> None:
        self.settings = settings
        self.with_kafka = with_kafka
        # A short server selection timeout: during an outage the consumer's retry loop, not a
        # 30 s driver wait per call, decides how long an event may take.
        self.mongo: AsyncMongoClient = AsyncMongoClient(settings.mongodb_url, tz_aware=True,
                                                        serverSelectionTimeoutMS=5000)
        self.db = self.mongo[settings.mongodb_database]
        self.store = Store(self.db)
        self.auth = ApiKeyAuth(self.db, settings.admin_api_key)
        self.http = http or httpx.AsyncClient(limits=httpx.Limits(max_connections=200))
        self.requester = ConnectionRequester(self.http)
        self.policies = PolicyCache(self.store)
        self.producer = make_producer(settings) if with_kafka else None
        self.publisher = KafkaPublisher(settings, self.producer) if self.producer else NullPublisher()
        self.engine = Engine(settings, self.store, self.publisher, self.http, policies=self.policies)
        self.consumer = InboundConsumer(settings, self.engine, **(consumer_options or {})) if with_kafka else None
        self._bus = BusCheck(settings, [TOPIC_INBOUND, TOPIC_REPLIES, TOPIC_DEVICE_EVENTS]) if with_kafka else None
        # Bulk jobs: stored, leased and resumed by any instance (services/orchestrator/jobs.py).
        self.jobs = JobEngine(settings, self.store, self.publisher, self.http, self.requester,
                              config=job_config or JobConfig.from_settings(settings),
                              max_attempts=self.engine.config.max_attempts)
        self.sweep_interval = sweep_interval
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.store.ensure_indexes()
        await self.auth.ensure_indexes()
        if self.producer is not None:
            await self.producer.start()
        if self.consumer is not None:
            await self.consumer.start()
        if self.sweep_interval is not None:
            self._sweeper = asyncio.create_task(sweep_forever(self.engine, self.sweep_interval))
        self.jobs.start()

    async def close(self) -> None:
        await self.jobs.stop()
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._sweeper
        if self.consumer is not None:
            await self.consumer.stop()
        if self.producer is not None:
            await self.producer.stop()
        await self.http.aclose()
        await self.mongo.close()

    async def kafka_ready(self) -> bool:
        """The consumer runs, the broker answers and the topics of the session path exist."""
        if self.consumer is None or self._bus is None:
            return True
        return self.consumer.running() and await self._bus()

    async def __aenter__(self) -> OrchestratorRuntime:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
