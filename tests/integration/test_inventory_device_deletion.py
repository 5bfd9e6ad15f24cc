"""Deleting a device forgets it everywhere: inventory API, both consumers and the orchestrator, on
the real broker and database, with the test playing the gateway.

DELETE /api/v1/devices/{id} publishes DeviceDeleted on cwmp.inbound; the orchestrator then drops
the device's state and sessions and cancels its open tasks, so that the next Inform is a first
contact (bootstrap provisioning and discovery again) and nothing queued before the deletion runs.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from services.bus.events import (
    TOPIC_INBOUND,
    TOPIC_REPLIES,
    DeviceIdentity,
    InformEventCode,
    InformReceived,
    ParameterValue,
    SessionPlan,
    encode,
)
from services.bus.kafka import ensure_topics, make_producer, topic_name
from services.common.settings import Settings
from services.inventory import store as inventory_store
from services.inventory.app import create_app as inventory_app
from services.inventory.consumer import InventoryConsumer
from services.orchestrator.app import create_app as orchestrator_app
from services.orchestrator.engine import DELETED_REASON
from services.orchestrator.runtime import OrchestratorRuntime

pytestmark = pytest.mark.integration

ADMIN = {"Authorization": "Bearer test-admin-key"}
DEVICE = "00D09E-Box-DEL1"
PATH = quote(DEVICE, safe="")
REPLY_PARTITION = 1
FAST_GROUP = {"session_timeout_ms": 2000, "heartbeat_interval_ms": 500}


async def eventually(probe: Callable[[], Awaitable[Any]], within: float = 20.0) -> Any:
    async with asyncio.timeout(within):
        while not (result := await probe()):  # noqa: ASYNC110 - polls other tasks' effects
            await asyncio.sleep(0.1)
    return result


class Stack:
    """Orchestrator and inventory (consumers and APIs) on the test's topics and database."""

    def __init__(self, settings: Settings, runtime: OrchestratorRuntime, producer: AIOKafkaProducer,
                 replies: AIOKafkaConsumer, orchestrator: httpx.AsyncClient, inventory: httpx.AsyncClient) -> None:
        self.settings, self.runtime, self.producer, self.replies = settings, runtime, producer, replies
        self.orchestrator, self.inventory = orchestrator, inventory
        self.plans: list[SessionPlan] = []

    async def inform(self, session_id: str, *codes: str) -> SessionPlan:
        event = InformReceived(
            device_id=DEVICE, session_id=session_id, gateway_id="gw-test",
            reply_to=f"{TOPIC_REPLIES}:{REPLY_PARTITION}",
            device=DeviceIdentity(manufacturer="Acme", oui="00D09E", product_class="Box", serial_number="DEL1"),
            events=[InformEventCode(code=code) for code in codes],
            parameters=[ParameterValue(name="Device.DeviceInfo.SoftwareVersion", value="1.0"),
                        ParameterValue(name="Device.ManagementServer.ConnectionRequestURL",
                                       value="http://127.0.0.1:9/cr"),
                        ParameterValue(name="Device.ManagementServer.ParameterKey", value="")])
        await self.producer.send_and_wait(topic_name(self.settings, TOPIC_INBOUND), encode(event),
                                          key=DEVICE.encode())
        async with asyncio.timeout(20):
            while True:
                for plan in self.plans:
                    if plan.in_reply_to == event.event_id:
                        return plan
                batch = await self.replies.getmany(timeout_ms=200)
                self.plans += [SessionPlan.model_validate_json(r.value) for rs in batch.values() for r in rs]

    async def tasks(self) -> list[dict[str, Any]]:
        response = await self.orchestrator.get(f"/api/v1/devices/{PATH}/tasks", headers=ADMIN)
        return list(response.json()["tasks"])


@pytest.fixture
async def stack(settings: Settings, kafka_bootstrap: str, mongodb_url: str) -> AsyncIterator[Stack]:
    await ensure_topics(settings)
    runtime = OrchestratorRuntime(settings, consumer_options=FAST_GROUP)
    await runtime.start()
    producer = make_producer(settings)
    await producer.start()
    inventory = InventoryConsumer(settings, runtime.db, producer, **FAST_GROUP)
    await inventory_store.ensure_indexes(runtime.db)
    await inventory.start()
    replies = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=None,
                               auto_offset_reset="earliest", enable_auto_commit=False)
    await replies.start()
    replies.assign([TopicPartition(topic_name(settings, TOPIC_REPLIES), REPLY_PARTITION)])
    orchestrator = httpx.AsyncClient(transport=httpx.ASGITransport(orchestrator_app(runtime, manage_runtime=False)),
                                     base_url="http://orchestrator")
    inventory_api = httpx.AsyncClient(transport=httpx.ASGITransport(
        inventory_app(settings, runtime.mongo, producer=producer)), base_url="http://inventory", headers=ADMIN)
    try:
        yield Stack(settings, runtime, producer, replies, orchestrator, inventory_api)
    finally:
        for closing in (orchestrator.aclose(), inventory_api.aclose(), replies.stop(), inventory.stop(),
                        producer.stop()):
            with contextlib.suppress(Exception):
                await closing
        await runtime.mongo.drop_database(settings.mongodb_database)
        await runtime.close()


def methods(plan: SessionPlan) -> list[str]:
    return [str(p.rpc["method"]) for p in plan.rpcs]


async def test_a_deleted_device_is_forgotten_and_its_next_inform_is_a_first_contact(stack: Stack) -> None:
    db = stack.runtime.db
    first = await stack.inform("session-1", "0 BOOTSTRAP", "1 BOOT")
    assert "GetParameterNames" in methods(first)  # bootstrap discovery, left unanswered: a live session
    await eventually(lambda: db["devices"].find_one({"_id": DEVICE}))
    queued = await stack.orchestrator.post(f"/api/v1/devices/{PATH}/tasks", headers=ADMIN, json={
        "name": "setParameterValues",
        "parameterValues": [{"name": "Device.DeviceInfo.ProvisioningCode", "value": "BEFORE-DELETE"}]})
    assert queued.status_code == 201, queued.text
    assert await db["orchestrator_devices"].find_one({"_id": DEVICE})
    assert await db["orchestrator_sessions"].count_documents({"device_id": DEVICE}) == 1

    assert (await stack.inventory.delete(f"/api/v1/devices/{PATH}")).status_code == 204

    # The orchestrator forgets the device: state and sessions gone, open tasks cancelled with a reason.
    async def forgotten() -> bool:
        tasks = await stack.tasks()
        return (await db["orchestrator_devices"].find_one({"_id": DEVICE}) is None
                and all(t["status"] == "cancelled" for t in tasks))
    await eventually(forgotten)
    assert await db["orchestrator_sessions"].count_documents({"device_id": DEVICE}) == 0
    tasks = {t["name"]: t for t in await stack.tasks()}
    assert set(tasks) == {"bootstrap", "setParameterValues"}
    assert {t["reason"] for t in tasks.values()} == {DELETED_REASON}

    # The device is unknown again: a task without ?preprovision=true is refused, not parked.
    refused = await stack.orchestrator.post(f"/api/v1/devices/{PATH}/tasks", headers=ADMIN, json={
        "name": "getParameterValues", "parameterNames": ["Device.DeviceInfo.UpTime"]})
    assert refused.status_code == 404, refused.text
    # A task preprovisioned after the deletion is for the device's next life: it stays.
    later = await stack.orchestrator.post(
        f"/api/v1/devices/{PATH}/tasks?preprovision=true", headers=ADMIN, json={
        "name": "getParameterValues", "parameterNames": ["Device.DeviceInfo.UpTime"]})
    assert later.status_code == 201, later.text

    # The next Inform, a routine one, is a first contact: bootstrap provisioning and discovery again.
    second = await stack.inform("session-2", "2 PERIODIC")
    # (connection-request credentials, the device's own ACS credentials, then discovery)
    assert methods(second)[:3] == ["SetParameterValues", "SetParameterValues", "GetParameterNames"]
    sent = str([p.rpc for p in second.rpcs])
    assert "BEFORE-DELETE" not in sent and "Device.DeviceInfo.UpTime" in sent
    assert (await stack.orchestrator.get(f"/api/v1/tasks/{queued.json()['id']}", headers=ADMIN)
            ).json()["status"] == "cancelled"
    bootstraps = [t for t in await stack.tasks() if t["name"] == "bootstrap"]
    assert sorted(t["status"] for t in bootstraps) == ["cancelled", "in_progress"]
    device = await eventually(lambda: db["devices"].find_one({"_id": DEVICE}))
    assert device["last_inform"] == device["first_seen"]  # registered again by the new Inform
