"""Everything the orchestrator process holds, built in one place and closed in reverse order."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import httpx
from pymongo import AsyncMongoClient

from services.bus.events import (
    TOPIC_CAMPAIGN_EVENTS,
    TOPIC_DEVICE_EVENTS,
    TOPIC_INBOUND,
    TOPIC_REPLIES,
    CampaignEvent,
    DeviceEvent,
    SessionPlan,
    encode,
)
from services.bus.kafka import BusCheck, make_producer, topic_name
from services.common.apikeys import ApiKeyAuth
from services.common.quirks import QuirksCache
from services.common.settings import Settings
from services.orchestrator.campaign_runner import KIND as CAMPAIGN
from services.orchestrator.campaign_runner import CampaignConfig, CampaignRunner, CampaignStore
from services.orchestrator.connreq import ConnectionRequester
from services.orchestrator.consumer import InboundConsumer, KafkaPublisher, sweep_forever
from services.orchestrator.engine import Engine, PolicyCache
from services.orchestrator.jobs import JobConfig, JobEngine
from services.orchestrator.profile_store import ProfileCache, ProfileStore, migrate_policies
from services.orchestrator.quirks_store import QuirkStore
from services.orchestrator.store import Store
from services.orchestrator.targets import TargetPolicy
from services.orchestrator.xmppconnreq import XmppRequester


class NullPublisher:
    """For an API-only runtime (tests, tools): plans and events go nowhere."""

    async def plan(self, reply_to: str, plan: SessionPlan) -> None:
        return None

    async def device_events(self, events: list[DeviceEvent]) -> None:
        return None


class OrchestratorRuntime:
    def __init__(self, settings: Settings, *, with_kafka: bool = True, http: httpx.AsyncClient | None = None,
                 consumer_options: dict[str, Any] | None = None, sweep_interval: float | None = None,
                 job_config: JobConfig | None = None, campaign_config: CampaignConfig | None = None) -> None:
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
        self.xmpp = XmppRequester.from_settings(settings)
        self.requester = ConnectionRequester(self.http, xmpp=self.xmpp, targets=TargetPolicy.from_settings(settings))
        self.policies = PolicyCache(self.store)
        self.profile_store = ProfileStore(self.db)
        self.profiles = ProfileCache(self.profile_store)
        # The per-vendor quirks (docs/quirks.md): written through the API, read from memory.
        self.quirk_store = QuirkStore(self.db)
        self.quirks = QuirksCache(self.db, settings.quirks_refresh_seconds)
        self.producer = make_producer(settings) if with_kafka else None
        self.publisher = KafkaPublisher(settings, self.producer) if self.producer else NullPublisher()
        self.engine = Engine(settings, self.store, self.publisher, self.http, policies=self.policies,
                             profiles=self.profiles, quirks=self.quirks)
        self.consumer = InboundConsumer(settings, self.engine, **(consumer_options or {})) if with_kafka else None
        self._bus = BusCheck(settings, [TOPIC_INBOUND, TOPIC_REPLIES, TOPIC_DEVICE_EVENTS]) if with_kafka else None
        # Bulk jobs: stored, leased and resumed by any instance (services/orchestrator/jobs.py).
        self.jobs = JobEngine(settings, self.store, self.publisher, self.http, self.requester,
                              config=job_config or JobConfig.from_settings(settings),
                              max_attempts=self.engine.config.max_attempts)
        # Firmware campaigns: another kind of the same engine (services/orchestrator/campaign_runner.py).
        self.campaign_devices = CampaignStore(self.db)
        self.campaigns = CampaignRunner(settings, self.store, self.campaign_devices, self.http, self.requester,
                                        self.publisher, self.campaign_event,
                                        config=campaign_config or CampaignConfig(
                                            tick_seconds=settings.campaign_tick_seconds,
                                            page_size=settings.job_page_size),
                                        wake=self.jobs.wake)
        self.jobs.register(CAMPAIGN, self.campaigns.tick)
        self.sweep_interval = sweep_interval
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.store.ensure_indexes()
        await self.auth.ensure_indexes()
        await self.campaign_devices.ensure_indexes()
        await self.profile_store.ensure_indexes()
        await migrate_policies(self.store, self.profile_store)
        await self.quirk_store.ensure_indexes()
        await self.quirks.start()
        if self.producer is not None:
            await self.producer.start()
        if self.consumer is not None:
            await self.consumer.start()
        if self.sweep_interval is not None:
            self._sweeper = asyncio.create_task(sweep_forever(self.engine, self.sweep_interval))
        self.jobs.start()

    async def close(self) -> None:
        await self.jobs.stop()
        await self.quirks.close()
        self.campaigns.cancel_timers()
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._sweeper
        if self.consumer is not None:
            await self.consumer.stop()
        if self.producer is not None:
            await self.producer.stop()
        if self.xmpp is not None:
            await self.xmpp.close()
        await self.http.aclose()
        await self.mongo.close()

    async def campaign_event(self, event: CampaignEvent) -> None:
        """campaign.events, keyed by campaign id (nowhere without Kafka)."""
        if self.producer is not None:
            await self.producer.send_and_wait(topic_name(self.settings, TOPIC_CAMPAIGN_EVENTS), encode(event),
                                              key=event.campaign_id.encode())

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
