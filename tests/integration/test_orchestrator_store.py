"""The store and the engine's write path on a real MongoDB: conditional writes, races, paging, sweeps."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from services.bus.events import (
    DeviceEvent,
    DeviceIdentity,
    InformEventCode,
    InformReceived,
    SessionPlan,
)
from services.common.settings import Settings
from services.orchestrator import planner
from services.orchestrator import tasks as T
from services.orchestrator.engine import Engine
from services.orchestrator.policies import Policy, PolicyMatch, PolicyTask
from services.orchestrator.runtime import OrchestratorRuntime
from services.orchestrator.state import DeviceState, SessionState
from services.orchestrator.store import CursorError, InformView, Store
from services.orchestrator.tasks import Task, TaskStatus

pytestmark = pytest.mark.integration

DEVICE = "000000-Box-1"
NOW = datetime.now(UTC).replace(microsecond=0)


class Recorder:
    def __init__(self) -> None:
        self.plans: list[SessionPlan] = []
        self.events: list[DeviceEvent] = []

    async def plan(self, reply_to: str, plan: SessionPlan) -> None:
        self.plans.append(plan)

    async def device_events(self, events: list[DeviceEvent]) -> None:
        self.events += events


@pytest.fixture
async def parts(settings: Settings, mongodb_url: str) -> AsyncIterator[tuple[Store, Engine, Recorder]]:
    runtime = OrchestratorRuntime(settings, with_kafka=False)
    await runtime.start()
    recorder = Recorder()
    engine = Engine(settings, runtime.store, recorder, runtime.http)
    await runtime.store.save_device(DeviceState(id=DEVICE, data_model="Device."))
    try:
        yield runtime.store, engine, recorder
    finally:
        await runtime.mongo.drop_database(settings.mongodb_database)
        await runtime.close()


def _task(task_id: str, created: datetime = NOW, **fields: object) -> Task:
    return Task(**{"id": task_id, "device_id": DEVICE, "name": "getRPCMethods", "created_at": created,
                   "updated_at": created, **fields})


def _inform() -> InformReceived:
    return InformReceived(device_id=DEVICE, session_id="s1", reply_to="cwmp.replies:0", gateway_id="gw",
                          device=DeviceIdentity(oui="000000", product_class="Box", serial_number="1"),
                          events=[InformEventCode(code="2 PERIODIC")], parameters=[])


async def _tasks(store: Store, ids: list[str]) -> list[Task]:
    found = [await store.get_task(task_id) for task_id in ids]
    return [t for t in found if t is not None]


async def _device_and_tasks(store: Store) -> tuple[DeviceState | None, list[Task]]:
    view = (await store.inform_views([DEVICE]))[DEVICE]
    return view.device, view.open_tasks


async def test_the_inform_view_holds_the_device_its_open_tasks_oldest_first_and_its_sessions(
        parts: tuple[Store, Engine, Recorder]) -> None:
    store, _, _ = parts
    await store.insert_tasks([_task("new", NOW), _task("old", NOW - timedelta(seconds=5)),
                              _task("done", NOW - timedelta(seconds=9), status=TaskStatus.SUCCEEDED),
                              _task("theirs", NOW - timedelta(seconds=7), device_id="000000-Box-2")])
    await store.save_session(SessionState(session_id="s0", device_id=DEVICE, gateway_id="gw",
                                          reply_to="cwmp.replies:0", created_at=NOW, updated_at=NOW))
    await store.save_session(SessionState(session_id="x0", device_id="000000-Box-2", gateway_id="gw",
                                          reply_to="cwmp.replies:0", created_at=NOW, updated_at=NOW))

    views = await store.inform_views([DEVICE, "000000-Box-2", "000000-Box-3"])
    view = views[DEVICE]
    assert view.device is not None and view.device.data_model == "Device."
    assert [t.id for t in view.open_tasks] == ["old", "new"]
    assert [s.session_id for s in view.sessions] == ["s0"]

    # A device that never informed may already have work queued.
    unseen = views["000000-Box-2"]
    assert unseen.device is None
    assert [t.id for t in unseen.open_tasks] == ["theirs"] and [s.session_id for s in unseen.sessions] == ["x0"]
    nothing = views["000000-Box-3"]
    assert (nothing.device, nothing.open_tasks, nothing.sessions) == (None, [], [])


async def test_the_informs_of_one_loop_turn_share_one_read_and_a_failed_read_fails_them_all(
        parts: tuple[Store, Engine, Recorder], monkeypatch: pytest.MonkeyPatch) -> None:
    store, engine, _ = parts
    await store.insert_tasks([_task("mine"), _task("theirs", device_id="000000-Box-2")])
    reads: list[list[str]] = []
    real = store.inform_views

    async def counted(device_ids: Sequence[str]) -> dict[str, InformView]:
        reads.append(list(device_ids))
        return await real(device_ids)

    monkeypatch.setattr(store, "inform_views", counted)
    views = await asyncio.gather(*(engine.inform_views.get(d) for d in (DEVICE, "000000-Box-2", "000000-Box-3")))
    assert reads == [[DEVICE, "000000-Box-2", "000000-Box-3"]]
    assert [[t.id for t in v.open_tasks] for v in views] == [["mine"], ["theirs"], []]
    assert views[0].device is not None and views[2].device is None

    # The next turn is a new round trip; a failure reaches every request that shared it.
    async def broken(device_ids: Sequence[str]) -> dict[str, InformView]:
        raise ConnectionError("MongoDB went away")

    monkeypatch.setattr(store, "inform_views", broken)
    outcomes = await asyncio.gather(engine.inform_views.get(DEVICE), engine.inform_views.get("000000-Box-2"),
                                    return_exceptions=True)
    assert [type(o) for o in outcomes] == [ConnectionError, ConnectionError]


async def test_the_session_view_holds_the_session_its_device_and_its_tasks_in_order(
        parts: tuple[Store, Engine, Recorder]) -> None:
    store, _, _ = parts
    await store.insert_tasks([_task("a"), _task("b"), _task("other", device_id="000000-Box-2")])
    await store.save_session(SessionState(session_id="s1", device_id=DEVICE, gateway_id="gw",
                                          task_ids=["b", "gone", "a"], reply_to="cwmp.replies:0",
                                          created_at=NOW, updated_at=NOW))
    view = await store.session_view("s1")
    assert view is not None
    assert view.session.task_ids == ["b", "gone", "a"] and view.session.reply_to == "cwmp.replies:0"
    assert view.device is not None and view.device.id == DEVICE
    assert [t.id for t in view.tasks] == ["b", "a"]  # a task deleted meanwhile is simply absent
    assert await store.session_view("nope") is None


async def test_conditional_writes_report_exactly_the_tasks_that_lost_a_race(
        parts: tuple[Store, Engine, Recorder]) -> None:
    store, _, _ = parts
    await store.insert_tasks([_task("a"), _task("b")])
    a, b = await _tasks(store, ["a", "b"])
    assert await store.save_task(T.cancel(b, NOW, "elsewhere")) is not None  # someone else moved b
    lost = await store.save_tasks([T.start(a, "s", NOW), T.start(b, "s", NOW)])
    assert lost == ["b"]
    assert [t.status for t in await _tasks(store, ["a", "b"])] == [TaskStatus.IN_PROGRESS, TaskStatus.CANCELLED]


async def test_rpcs_of_a_task_another_writer_changed_are_taken_out_of_the_plan(
        parts: tuple[Store, Engine, Recorder]) -> None:
    store, engine, recorder = parts
    await store.insert_tasks([_task("a", NOW - timedelta(seconds=2)), _task("b", NOW - timedelta(seconds=1))])
    decision = planner.on_inform(_inform(), *await _device_and_tasks(store), [],
                                 frozenset(), [], engine.env(), engine.config)
    assert decision.plan is not None and len(decision.plan.rpcs) == 2
    stored = await store.get_task("b")
    assert stored is not None
    await store.save_task(T.cancel(stored, NOW, "operator"))  # lands between the read and the write

    await engine._commit(decision, "cwmp.replies:0", "inform")
    plan = recorder.plans[-1]
    assert [p.rpc["method"] for p in plan.rpcs] == ["GetRPCMethods"]
    view = await store.session_view("s1")
    assert view is not None and view.session.batch == [plan.rpcs[0].rpc_id]
    assert [t.status for t in await _tasks(store, ["a", "b"])] == [TaskStatus.IN_PROGRESS,
                                                                        TaskStatus.CANCELLED]


async def test_task_listing_pages_newest_first(parts: tuple[Store, Engine, Recorder]) -> None:
    store, _, _ = parts
    await store.insert_tasks([_task(f"t{i}", NOW + timedelta(seconds=i)) for i in range(5)])
    seen, cursor = [], None
    while True:
        page, cursor = await store.list_tasks(device_id=DEVICE, limit=2, cursor=cursor)
        seen += [t.id for t in page]
        if cursor is None:
            break
    assert seen == ["t4", "t3", "t2", "t1", "t0"]
    with pytest.raises(CursorError):
        await store.list_tasks(cursor="not-a-cursor")


async def test_the_sweep_finds_and_settles_what_is_due(parts: tuple[Store, Engine, Recorder]) -> None:
    store, engine, recorder = parts
    past = datetime.now(UTC) - timedelta(hours=2)
    await store.insert_tasks([
        _task("expired", expires_at=past),
        _task("silent", name="download", status=TaskStatus.PENDING_COMPLETION, completion_deadline=past),
        _task("orphan", status=TaskStatus.IN_PROGRESS, attempts=1, session_id="gone", updated_at=past),
        _task("fine"),
    ])
    assert await engine.sweep_once() == 3
    by_id = {t.id: t for t in await _tasks(store, ["expired", "silent", "orphan", "fine"])}
    assert [by_id[i].status for i in ("expired", "silent", "orphan", "fine")] == [
        TaskStatus.EXPIRED, TaskStatus.FAILED, TaskStatus.PENDING, TaskStatus.PENDING]
    assert sorted((e.kind, e.details["task_id"]) for e in recorder.events) == [("task_expired", "expired"),
                                                                                ("task_failed", "silent")]
    assert await engine.sweep_once() == 0


@pytest.mark.parametrize(("inventory_up", "expected"), [(True, ["GetRPCMethods"]), (False, [])])
async def test_tag_policies_ask_the_inventory_and_do_without_it_when_it_is_down(
        settings: Settings, mongodb_url: str, inventory_up: bool, expected: list[str]) -> None:
    def inventory(request: httpx.Request) -> httpx.Response:
        assert request.url.path == f"/api/v1/devices/{DEVICE}" and request.url.params["fields"] == "tags"
        if not inventory_up:
            raise httpx.ConnectError("inventory down")
        return httpx.Response(200, json={"id": DEVICE, "tags": ["lab", "eu"]})

    runtime = OrchestratorRuntime(settings, with_kafka=False,
                                  http=httpx.AsyncClient(transport=httpx.MockTransport(inventory)))
    await runtime.start()
    recorder = Recorder()
    engine = Engine(settings, runtime.store, recorder, runtime.http)
    try:
        await runtime.store.save_device(DeviceState(id=DEVICE, data_model="Device."))
        await runtime.store.insert_policy(Policy(
            id="p1", name="lab", events=["periodic"], match=PolicyMatch(tags=["lab"]), created_at=NOW,
            tasks=[PolicyTask(name="getRPCMethods")]))
        await engine.handle(_inform())
        assert [p.rpc["method"] for p in recorder.plans[-1].rpcs] == expected
    finally:
        await runtime.mongo.drop_database(settings.mongodb_database)
        await runtime.close()

