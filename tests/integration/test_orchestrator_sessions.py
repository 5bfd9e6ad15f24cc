"""The orchestrator through real Kafka and MongoDB, with the test playing the gateway and the CPE.

The test publishes what a gateway would (InformReceived, RpcResponseReceived, CpeRequestReceived,
SessionEnded) to cwmp.inbound and reads the SessionPlans from its own cwmp.replies partition.
RPC dicts go through cwmp.models exactly as the gateway's codec would handle them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from cwmp import models
from cwmp.digest import compute_ha1, compute_response, parse_authorization
from cwmp.values import ParameterValue
from services.bus.events import (
    TOPIC_DEVICE_EVENTS,
    TOPIC_INBOUND,
    TOPIC_REPLIES,
    CpeRequestReceived,
    DeviceDeleted,
    DeviceEvent,
    DeviceIdentity,
    InformEventCode,
    InformReceived,
    RpcFaultReceived,
    RpcResponseReceived,
    SessionEnded,
    SessionPlan,
    SetParameterValuesFaultEntry,
    encode,
)
from services.bus.events import (
    ParameterValue as InformParameter,
)
from services.bus.kafka import ensure_topics, make_producer, topic_name
from services.common.settings import Settings
from services.inventory import credentials
from services.orchestrator.app import create_app
from services.orchestrator.engine import DELETED_REASON
from services.orchestrator.runtime import OrchestratorRuntime
from services.orchestrator.state import DeviceState
from services.orchestrator.tasks import Task

pytestmark = pytest.mark.integration

ADMIN = {"Authorization": "Bearer test-admin-key"}
IGD = "InternetGatewayDevice."
REPLY_PARTITION = 2


@dataclass
class Gateway:
    """The test's stand-in for a gateway instance: publishes inbound events, reads its replies."""

    settings: Settings
    producer: AIOKafkaProducer
    replies: AIOKafkaConsumer
    events: AIOKafkaConsumer
    device_id: str = "09D021-IGD%20Simulator-000000000012"
    session_id: str = "session-1"
    plans: list[SessionPlan] = field(default_factory=list)
    seen: list[DeviceEvent] = field(default_factory=list)
    _read: int = 0

    def ref(self) -> dict[str, Any]:
        return {"device_id": self.device_id, "session_id": self.session_id, "gateway_id": "gw-test",
                "reply_to": f"{TOPIC_REPLIES}:{REPLY_PARTITION}"}

    async def publish(self, event: Any) -> None:
        await self.producer.send_and_wait(topic_name(self.settings, TOPIC_INBOUND), encode(event),
                                          key=self.device_id.encode())

    async def inform(self, *codes: str, parameters: dict[str, str]) -> SessionPlan:
        event = InformReceived(**self.ref(), device=DeviceIdentity(
            manufacturer="Workssys", oui="09D021", product_class="IGD Simulator", serial_number="000000000012"),
            events=[InformEventCode(code=c) for c in codes],
            parameters=[InformParameter(name=n, value=v) for n, v in parameters.items()])
        await self.publish(event)
        return await self.plan_for(event.event_id)

    async def answer(self, rpc_id: str, response: models.CwmpMessage) -> RpcResponseReceived:
        event = RpcResponseReceived(**self.ref(), rpc_id=rpc_id, method=response.METHOD,
                                    rpc=models.rpc_to_dict(response))
        await self.publish(event)
        return event

    async def plan_for(self, event_id: str) -> SessionPlan:
        async with asyncio.timeout(20):
            while True:
                for plan in self.plans:
                    if plan.in_reply_to == event_id:
                        return plan
                batch = await self.replies.getmany(timeout_ms=200)
                self.plans += [SessionPlan.model_validate_json(r.value) for rs in batch.values() for r in rs]

    async def device_event(self, kind: str) -> DeviceEvent:
        async with asyncio.timeout(20):
            while True:
                batch = await self.events.getmany(timeout_ms=200)
                for records in batch.values():
                    for record in records:
                        self.seen.append(DeviceEvent.model_validate_json(record.value))
                for event in self.seen[self._read:]:
                    self._read += 1
                    if event.kind == kind:
                        return event


@pytest.fixture
async def orchestrator(settings: Settings, kafka_bootstrap: str, mongodb_url: str,
                       ) -> AsyncIterator[tuple[OrchestratorRuntime, httpx.AsyncClient, Gateway]]:
    await ensure_topics(settings)
    runtime = OrchestratorRuntime(settings, consumer_options={"session_timeout_ms": 2000,
                                                              "heartbeat_interval_ms": 500})
    await runtime.start()
    producer = make_producer(settings)
    await producer.start()
    replies = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=None,
                               auto_offset_reset="earliest", enable_auto_commit=False)
    events = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=None,
                              auto_offset_reset="earliest", enable_auto_commit=False)
    await replies.start()
    await events.start()
    replies.assign([TopicPartition(topic_name(settings, TOPIC_REPLIES), REPLY_PARTITION)])
    events.assign([TopicPartition(topic_name(settings, TOPIC_DEVICE_EVENTS), p) for p in range(4)])
    app = create_app(runtime, manage_runtime=False)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://orchestrator") as api:
            yield runtime, api, Gateway(settings, producer, replies, events)
    finally:
        for closing in (replies.stop(), events.stop(), producer.stop()):
            with contextlib.suppress(Exception):
                await closing
        await runtime.mongo.drop_database(settings.mongodb_database)
        await runtime.close()


async def _task(api: httpx.AsyncClient, task_id: str, status: str) -> dict[str, Any]:
    async with asyncio.timeout(20):
        while True:
            task = (await api.get(f"/api/v1/tasks/{task_id}", headers=ADMIN)).json()
            if task["status"] == status:
                return task
            await asyncio.sleep(0.05)


def _seed_parameters(cr_url: str = "http://A:10016/") -> dict[str, str]:
    return {f"{IGD}DeviceInfo.SoftwareVersion": "Rev 1.9.82.342.17",
            f"{IGD}ManagementServer.ConnectionRequestURL": cr_url,
            f"{IGD}ManagementServer.ParameterKey": ""}


async def test_a_task_queued_by_rest_runs_in_the_next_session_and_its_result_is_readable(orchestrator: Any) -> None:
    runtime, api, gateway = orchestrator
    # A device provisioned earlier, so that this session holds nothing but the operator's task.
    await runtime.store.save_device(DeviceState(id=gateway.device_id, data_model=IGD, cr_username="u",
                                                cr_password="p"))
    names = [f"{IGD}DeviceInfo.SoftwareVersion", f"{IGD}DeviceInfo.UpTime"]
    created = await api.post(f"/api/v1/devices/{quote(gateway.device_id, safe='')}/tasks", headers=ADMIN,
                             json={"name": "getParameterValues", "parameter_names": names})
    assert created.status_code == 201
    task_id = created.json()["id"]

    plan = await gateway.inform("6 CONNECTION REQUEST", parameters=_seed_parameters())
    assert (plan.device_id, plan.session_id, plan.gateway_id, plan.more) == (
        gateway.device_id, gateway.session_id, "gw-test", False)
    assert len(plan.rpcs) == 1
    request = models.rpc_from_dict(plan.rpcs[0].rpc)  # what the gateway does with it
    assert isinstance(request, models.GetParameterValues) and list(request.parameter_names) == names
    assert (await api.get(f"/api/v1/tasks/{task_id}", headers=ADMIN)).json()["status"] == "in_progress"

    await gateway.answer(plan.rpcs[0].rpc_id, models.GetParameterValuesResponse(parameter_list=(
        models.ParameterValueStruct(names[0], ParameterValue("Rev 1.9.82.342.17", "xsd:string")),
        models.ParameterValueStruct(names[1], ParameterValue("3600", "xsd:unsignedInt")))))
    await gateway.publish(SessionEnded(**gateway.ref(), outcome="completed"))

    task = await _task(api, task_id, "succeeded")
    assert task["result"]["parameters"] == [
        {"name": names[0], "value": "Rev 1.9.82.342.17", "type": "xsd:string"},
        {"name": names[1], "value": "3600", "type": "xsd:unsignedInt"}]
    announced = await gateway.device_event("task_succeeded")
    assert announced.device_id == gateway.device_id and announced.details["task_id"] == task_id


async def test_a_cpe_fault_and_an_operator_cancel_reach_the_event_stream(orchestrator: Any) -> None:
    runtime, api, gateway = orchestrator
    await runtime.store.save_device(DeviceState(id=gateway.device_id, data_model=IGD, cr_username="u",
                                                cr_password="p"))
    url = f"/api/v1/devices/{quote(gateway.device_id, safe='')}/tasks"
    refused = (await api.post(url, headers=ADMIN, json={"name": "setParameterValues", "parameter_values": [
        [f"{IGD}DeviceInfo.ProvisioningCode", "lab"]]})).json()
    plan = await gateway.inform("6 CONNECTION REQUEST", parameters=_seed_parameters())
    (planned,) = plan.rpcs
    fault = RpcFaultReceived(**gateway.ref(), rpc_id=planned.rpc_id, method="SetParameterValues", fault_code=9003,
                             fault_string="Invalid arguments", parameter_faults=[SetParameterValuesFaultEntry(
                                 parameter_name=f"{IGD}DeviceInfo.ProvisioningCode", fault_code=9008,
                                 fault_string="read-only")])
    await gateway.publish(fault)
    await gateway.publish(fault)  # redelivered: announced once
    await gateway.publish(SessionEnded(**gateway.ref(), outcome="completed"))
    raised = await gateway.device_event("fault_raised")
    assert raised.details == {"code": 9003, "string": "Invalid arguments", "method": "SetParameterValues",
                              "task_id": refused["id"], "session_id": gateway.session_id, "parameter_faults": [
                                  {"parameter_name": f"{IGD}DeviceInfo.ProvisioningCode", "fault_code": 9008,
                                   "fault_string": "read-only"}]}
    failed = await gateway.device_event("task_failed")
    assert failed.details["task_id"] == refused["id"] and failed.details["fault"]["code"] == 9003

    queued = (await api.post(url, headers=ADMIN, json={"name": "reboot"})).json()
    assert (await api.post(f"/api/v1/tasks/{queued['id']}/cancel", headers=ADMIN)).status_code == 200
    cancelled = await gateway.device_event("task_cancelled")
    assert cancelled.details == {"task_id": queued["id"], "name": "reboot", "origin": "api",
                                 "reason": "cancelled by bootstrap-admin"}
    # Only one fault_raised for the fault delivered twice.
    assert [e for e in gateway.seen if e.kind == "fault_raised"] == [raised]


class DigestCpe:
    """A CPE's connection request listener: demands Digest, records every request it gets."""

    def __init__(self) -> None:
        self.requests: list[dict[str, str]] = []
        self.credentials: tuple[str, str] | None = None
        self.server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        host, port = self.server.sockets[0].getsockname()[:2]
        return f"http://{host}:{port}/cr/0123"

    async def __aenter__(self) -> DigestCpe:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode()
                line, *header_lines = head.split("\r\n")
                headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines if h)}
                self.requests.append({"line": line, **headers})
                if self._authorized(headers.get("authorization"), line.split()[1]):
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                else:
                    writer.write(b'HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Digest realm="cpe", '
                                 b'qop="auth", nonce="n0nce", opaque="op"\r\nContent-Length: 0\r\n\r\n')
                await writer.drain()
        writer.close()

    def _authorized(self, header: str | None, uri: str) -> bool:
        if header is None or self.credentials is None:
            return False
        given = parse_authorization(header)
        username, password = self.credentials
        ha1 = compute_ha1("MD5", username, "cpe", password)
        expected = compute_response("MD5", ha1, "n0nce", "GET", uri, qop=given.qop, nc=given.nc,
                                    cnonce=given.cnonce)
        return given.username == username and given.uri == uri and given.response == expected


async def test_bootstrap_over_kafka_then_a_connection_request_with_the_credentials_it_set(
        orchestrator: Any) -> None:
    runtime, api, gateway = orchestrator
    stored = runtime.db[credentials.CREDENTIALS]
    async with DigestCpe() as cpe:
        plan = await gateway.inform("0 BOOTSTRAP", "1 BOOT", parameters=_seed_parameters(cpe.url))
        assert [p.rpc["method"] for p in plan.rpcs] == ["SetParameterValues", "SetParameterValues",
                                                        "GetParameterNames", "GetParameterNames"]
        assert plan.more is True
        spv = models.rpc_from_dict(plan.rpcs[0].rpc)
        assert isinstance(spv, models.SetParameterValues)
        given = {p.name: p.value.value for p in spv.parameter_list}
        cpe.credentials = (given[f"{IGD}ManagementServer.ConnectionRequestUsername"],
                           given[f"{IGD}ManagementServer.ConnectionRequestPassword"])
        # The device's own ACS credentials, in an SPV of their own (a CPE may refuse just those).
        own = models.rpc_from_dict(plan.rpcs[1].rpc)
        assert isinstance(own, models.SetParameterValues)
        acs_pair = {p.name: p.value.value for p in own.parameter_list}
        username, password = acs_pair[f"{IGD}ManagementServer.Username"], acs_pair[f"{IGD}ManagementServer.Password"]
        assert username == gateway.device_id and len(password) >= 24
        # Stored as HA1s before the plan went out, pending: the shared pair still works until confirmed.
        record = await stored.find_one({"_id": username})
        assert record["pending_ha1_md5"] == compute_ha1("MD5", username, "acs", password)
        assert "ha1_md5" not in record
        assert not await credentials.has_own_credentials(runtime.db, gateway.device_id)

        # The CPE answers; the walk's next step comes as a second plan, after the last answer.
        await gateway.answer(plan.rpcs[0].rpc_id, models.SetParameterValuesResponse(status=0))
        await gateway.answer(plan.rpcs[1].rpc_id, models.SetParameterValuesResponse(status=0))
        await gateway.answer(plan.rpcs[2].rpc_id, models.GetParameterNamesResponse(parameter_list=(
            models.ParameterInfoStruct(f"{IGD}DeviceInfo.SoftwareVersion", False),)))
        last = await gateway.answer(plan.rpcs[3].rpc_id, models.GetParameterNamesResponse(parameter_list=(
            models.ParameterInfoStruct(f"{IGD}ManagementServer.PeriodicInformInterval", True),)))
        follow = await gateway.plan_for(last.event_id)
        assert follow.more is False
        assert [models.rpc_from_dict(p.rpc).METHOD for p in follow.rpcs] == ["GetParameterValues"]
        await gateway.answer(follow.rpcs[0].rpc_id, models.GetParameterValuesResponse(parameter_list=(
            models.ParameterValueStruct(f"{IGD}DeviceInfo.SoftwareVersion", ParameterValue("Rev 1", "xsd:string")),
            models.ParameterValueStruct(f"{IGD}ManagementServer.PeriodicInformInterval",
                                        ParameterValue("3600", "xsd:unsignedInt")))))
        await gateway.publish(SessionEnded(**gateway.ref(), outcome="completed"))

        history = f"/api/v1/devices/{quote(gateway.device_id, safe='')}/tasks"
        async with asyncio.timeout(20):
            while True:
                tasks = (await api.get(history, headers=ADMIN)).json()["tasks"]
                if tasks and tasks[0]["status"] == "succeeded":
                    break
                await asyncio.sleep(0.05)
        bootstrap = tasks[0]
        assert (bootstrap["name"], bootstrap["origin"]) == ("bootstrap", "bootstrap")
        assert {p["name"] for p in bootstrap["result"]["parameters"]} == {
            f"{IGD}DeviceInfo.SoftwareVersion", f"{IGD}ManagementServer.PeriodicInformInterval"}
        assert cpe.credentials[1] not in str(bootstrap)  # the password is not in the task history
        assert password not in str(bootstrap) and bootstrap["result"]["cpe_credentials"] == "set"
        # Confirmed by the SPV's answer: the device has its own credentials, and only as HA1s.
        record = await stored.find_one({"_id": username})
        assert record["ha1_md5"] == compute_ha1("MD5", username, "acs", password)
        assert record["ha1_sha256"] == compute_ha1("SHA-256", username, "acs", password)
        assert "pending_ha1_md5" not in record and record["source"] == "bootstrap"
        assert await credentials.has_own_credentials(runtime.db, gateway.device_id)
        for collection in await runtime.db.list_collection_names():
            async for document in runtime.db[collection].find({}):
                assert password not in str(document), collection

        woken = await api.post(history, params={"connection_request": "true"}, headers=ADMIN,
                               json={"name": "reboot"})
    assert woken.status_code == 201
    assert woken.json()["connection_request"]["outcome"] == "ok", woken.json()
    # The CPE saw one unauthenticated GET, then one with Digest for the credentials it was given.
    assert [r["line"] for r in cpe.requests] == ["GET /cr/0123 HTTP/1.1"] * 2
    assert "authorization" not in cpe.requests[0]
    assert parse_authorization(cpe.requests[1]["authorization"]).username == cpe.credentials[0]


async def test_a_firmware_download_is_closed_by_the_transfer_complete_of_a_later_session(orchestrator: Any) -> None:
    runtime, api, gateway = orchestrator
    await runtime.store.save_device(DeviceState(id=gateway.device_id, data_model=IGD,
                                                software_version="Rev 1.9.82.342.17"))
    now = runtime.engine.env().now
    await runtime.store.insert_tasks([Task(
        id="fw0123456789abcdef0123456789ab", device_id=gateway.device_id, name="download", created_at=now,
        updated_at=now, args={"file_name": "fw.bin", "file_type": "1 Firmware Upgrade Image", "file_size": 83687,
                              "url": "http://127.0.0.1:7567/download/fw.bin", "version": "Rev 2"})])
    plan = await gateway.inform("2 PERIODIC", parameters=_seed_parameters())
    download = models.rpc_from_dict(plan.rpcs[0].rpc)
    assert isinstance(download, models.Download)
    assert download.username.startswith("dl2.") and download.password and download.file_size == 83687
    await gateway.answer(plan.rpcs[0].rpc_id, models.DownloadResponse(status=1))
    await gateway.publish(SessionEnded(**gateway.ref(), outcome="completed"))
    await _task(api, "fw0123456789abcdef0123456789ab", "pending_completion")

    gateway.session_id = "session-2"
    upgraded = {**_seed_parameters(), f"{IGD}DeviceInfo.SoftwareVersion": "Rev 2"}
    later = await gateway.inform("1 BOOT", "7 TRANSFER COMPLETE", "M Download", parameters=upgraded)
    assert later.rpcs == []
    await gateway.publish(CpeRequestReceived(**gateway.ref(), method="TransferComplete", rpc=models.rpc_to_dict(
        models.TransferComplete(command_key=download.command_key, fault_struct=models.FaultStruct(0, "")))))
    task = await _task(api, "fw0123456789abcdef0123456789ab", "succeeded")
    assert task["result"]["transfer"]["fault_code"] == 0
    upgrade = await gateway.device_event("firmware_upgraded")
    assert (upgrade.details["from"], upgrade.details["to"]) == ("Rev 1.9.82.342.17", "Rev 2")


async def test_deleting_a_device_announces_each_task_it_cancels(orchestrator: Any) -> None:
    _, api, gateway = orchestrator
    url = f"/api/v1/devices/{quote(gateway.device_id, safe='')}/tasks"
    queued = [(await api.post(url, headers=ADMIN, params={"preprovision": "true"}, json=spec)).json()
              for spec in ({"name": "reboot"}, {"name": "getRPCMethods"})]
    assert all("id" in task for task in queued), queued
    await gateway.publish(DeviceDeleted(device_id=gateway.device_id, deleted_by="ops"))
    announced = [await gateway.device_event("task_cancelled") for _ in queued]
    assert sorted((e.details["task_id"], e.details["name"], e.details["origin"]) for e in announced) == sorted(
        (t["id"], t["name"], "api") for t in queued)
    assert all(e.details["reason"] == DELETED_REASON and e.device_id == gateway.device_id for e in announced)


async def test_secret_values_go_to_the_cpe_but_no_api_answer_or_event_shows_them(orchestrator: Any) -> None:
    runtime, api, gateway = orchestrator
    await runtime.store.save_device(DeviceState(id=gateway.device_id, data_model=IGD, cr_username="u",
                                                cr_password="p"))
    psk = f"{IGD}LANDevice.1.WLANConfiguration.1.PreSharedKey.1.KeyPassphrase"
    history = f"/api/v1/devices/{quote(gateway.device_id, safe='')}/tasks"
    reader = await api.post("/api/v1/apikeys", headers=ADMIN, json={"name": "ro", "role": "read-only"})
    read_only = {"X-API-Key": reader.json()["key"]}
    created = await api.post(history, headers=ADMIN, json={"name": "setParameterValues", "parameter_values": [
        [psk, "wifi-secret-1"], [f"{IGD}ManagementServer.ConnectionRequestPassword", "cr-secret-2"],
        [f"{IGD}DeviceInfo.ProvisioningCode", "visible"]]})
    assert created.status_code == 201 and "secret-" not in created.text  # not even to its author
    task_id = created.json()["id"]

    # The plan to the gateway carries the values: the CPE must get them.
    plan = await gateway.inform("6 CONNECTION REQUEST", parameters=_seed_parameters())
    (planned,) = plan.rpcs
    sent = {p["name"]: p["value"]["value"] for p in planned.rpc["parameter_list"]}
    assert sent[psk] == "wifi-secret-1"
    await gateway.answer(planned.rpc_id, models.SetParameterValuesResponse(status=0))
    await gateway.publish(SessionEnded(**gateway.ref(), outcome="completed"))
    done = await _task(api, task_id, "succeeded")

    for headers in (ADMIN, read_only):  # every role
        answers = [await api.get(f"/api/v1/tasks/{task_id}", headers=headers), await api.get(history, headers=headers),
                   await api.get("/api/v1/tasks", headers=headers)]
        for answer in answers:
            assert answer.status_code == 200
            assert "secret-1" not in answer.text and "cr-secret-2" not in answer.text, answer.text
    values = {v["name"]: v["value"] for v in done["args"]["parameter_values"]}
    assert values == {psk: "<redacted>", f"{IGD}ManagementServer.ConnectionRequestPassword": "<redacted>",
                      f"{IGD}DeviceInfo.ProvisioningCode": "visible"}
    event = await gateway.device_event("task_succeeded")
    assert "secret" not in event.model_dump_json()
