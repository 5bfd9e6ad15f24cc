"""Pure parts of the gateway: throttling, plan following, body reading limits."""

from __future__ import annotations

import asyncio
import gzip

import pytest

from services.bus.events import PlannedRpc, SessionPlan
from services.gateway.http import BodyTimeout, BodyTooLarge, ClientGone, read_body
from services.gateway.sessions import GatewaySession
from services.gateway.throttle import AuthThrottle


def test_throttle_blocks_a_username_and_address_pair_after_the_limit_until_the_window_ends() -> None:
    throttle = AuthThrottle(max_failures=3, window_seconds=60)
    for _ in range(2):
        throttle.failed("cpe-a", "10.0.0.1", now=100.0)
    assert throttle.retry_after("cpe-a", "10.0.0.1", now=101.0) == 0
    throttle.failed("cpe-a", "10.0.0.1", now=102.0)
    assert throttle.retry_after("cpe-a", "10.0.0.1", now=103.0) == 57
    assert throttle.retry_after("cpe-a", "10.0.0.2", now=103.0) == 0  # another address
    assert throttle.retry_after("cpe-b", "10.0.0.1", now=103.0) == 0  # another CPE behind the same NAT
    assert throttle.retry_after(None, "10.0.0.1", now=103.0) == 0  # no credentials yet: challenged
    assert throttle.retry_after("cpe-a", "10.0.0.1", now=161.0) == 0  # window over


def test_one_good_login_resets_its_own_pair_only() -> None:
    throttle = AuthThrottle(max_failures=3, window_seconds=60)
    for _ in range(2):
        throttle.failed("guess", "10.0.0.1", now=0.0)
        throttle.failed("cpe-a", "10.0.0.1", now=0.0)
    throttle.succeeded("cpe-a", "10.0.0.1")
    throttle.failed("guess", "10.0.0.1", now=1.0)
    assert throttle.retry_after("guess", "10.0.0.1", now=2.0) > 0  # the guesser's count survived
    throttle.failed("cpe-a", "10.0.0.1", now=1.0)
    assert throttle.retry_after("cpe-a", "10.0.0.1", now=2.0) == 0  # its own was cleared


def test_the_per_address_ceiling_refuses_usernames_that_failed_there_but_never_a_fresh_one() -> None:
    throttle = AuthThrottle(max_failures=5, window_seconds=60, max_per_address=10)
    for i in range(10):  # a guesser rotating usernames: one guess each
        throttle.failed(f"user{i}", "10.0.0.1", now=0.0)
    assert throttle.retry_after("user3", "10.0.0.1", now=1.0) == 59  # its second guess waits
    assert throttle.retry_after("user99", "10.0.0.1", now=1.0) == 0  # untried: checked
    assert throttle.retry_after("cpe-a", "10.0.0.1", now=1.0) == 0  # a CPE that never failed gets in
    assert throttle.retry_after("user3", "10.0.0.2", now=1.0) == 0  # per address
    assert throttle.retry_after("user3", "10.0.0.1", now=61.0) == 0


def test_throttle_memory_is_bounded() -> None:
    throttle = AuthThrottle(max_failures=1, window_seconds=60, max_tracked=100)
    for i in range(1000):
        throttle.failed(f"u{i}", f"10.0.{i // 256}.{i % 256}", now=float(i))
        throttle.failed("x" * 100_000, "10.9.9.9", now=float(i))  # long usernames are cut for the key
    assert len(throttle._pairs._windows) <= 100 and len(throttle._addresses._windows) <= 100
    assert all(len(user) <= 256 for user, _ in throttle._pairs._windows)  # type: ignore[misc]


def _session() -> GatewaySession:
    return GatewaySession("s1", "dev", "urn:dslforum-org:cwmp-1-0", "127.0.0.1:1", "127.0.0.1", machine=None)


def _plan(ids: list[str], more: bool = False, in_reply_to: str | None = None) -> SessionPlan:
    # Each plan answers its own event unless a test says otherwise (a redelivery).
    return SessionPlan(device_id="dev", session_id="s1", gateway_id="g", more=more,
                       in_reply_to=in_reply_to or f"event-{'-'.join(ids)}",
                       rpcs=[PlannedRpc(rpc_id=i, rpc={"method": "GetRPCMethods"}) for i in ids])


async def test_plan_that_arrived_early_is_used_without_waiting() -> None:
    session = _session()
    session.receive_plan(_plan(["a", "b"]))
    assert (await session.next_rpc(0.01)).rpc_id == "a"
    assert (await session.next_rpc(0.01)).rpc_id == "b"
    assert await session.next_rpc(0.01) is None
    assert not session.plan_timed_out


async def test_plan_is_awaited_and_a_missing_one_times_out() -> None:
    session = _session()
    waiter = asyncio.create_task(session.next_rpc(2.0))
    await asyncio.sleep(0.01)
    session.receive_plan(_plan(["a"]))
    assert (await waiter).rpc_id == "a"

    late = _session()
    assert await late.next_rpc(0.05) is None
    assert late.plan_timed_out


async def test_more_means_another_plan_is_owed_after_the_batch() -> None:
    session = _session()
    session.receive_plan(_plan(["gpn"], more=True))
    assert (await session.next_rpc(0.01)).rpc_id == "gpn"
    waiter = asyncio.create_task(session.next_rpc(2.0))
    await asyncio.sleep(0.01)
    assert not waiter.done()  # waits for the dependent step
    session.receive_plan(_plan(["gpv"]))
    assert (await waiter).rpc_id == "gpv"
    assert await session.next_rpc(0.01) is None


async def test_an_empty_plan_with_more_owes_nothing() -> None:
    session = _session()
    session.receive_plan(_plan([], more=True))
    assert await session.next_rpc(0.01) is None
    assert not session.plan_timed_out


async def test_a_plan_delivered_twice_sends_its_rpcs_once() -> None:
    session = _session()
    assert session.receive_plan(_plan(["add", "dl"], in_reply_to="inform-1"))
    assert not session.receive_plan(_plan(["add", "dl"], in_reply_to="inform-1"))  # redelivered
    assert [(await session.next_rpc(0.01)).rpc_id for _ in range(2)] == ["add", "dl"]
    assert await session.next_rpc(0.01) is None
    assert session.rpcs_planned == 2 and session.unsent_rpc_ids() == []


async def test_rpcs_already_queued_sent_or_answered_are_not_queued_again() -> None:
    session = _session()
    session.receive_plan(_plan(["gpn"], more=True, in_reply_to="inform-1"))
    assert (await session.next_rpc(0.01)).rpc_id == "gpn"  # sent (and, say, answered)
    waiter = asyncio.create_task(session.next_rpc(2.0))
    await asyncio.sleep(0.01)
    # The same RPC under another in_reply_to (a replay of an old plan) changes nothing: the
    # session keeps waiting for the plan it is owed instead of ending on that plan's `more`.
    assert not session.receive_plan(_plan(["gpn"], more=False, in_reply_to="answer-0"))
    await asyncio.sleep(0.01)
    assert not waiter.done()
    # The owed plan repeats an RPC id it already sent beside a new one: only the new one is queued.
    assert session.receive_plan(_plan(["gpn", "gpv"], in_reply_to="answer-1"))
    assert (await waiter).rpc_id == "gpv"
    assert await session.next_rpc(0.01) is None
    assert session.rpcs_planned == 2


async def test_a_closed_session_stops_waiting_for_its_plan() -> None:
    session = _session()
    waiter = asyncio.create_task(session.next_rpc(30.0))
    await asyncio.sleep(0.01)
    session.close()
    assert await asyncio.wait_for(waiter, 1.0) is None
    assert not session.plan_timed_out


def _receiver(chunks: list[bytes], delay: float = 0.0, disconnect: bool = False):  # type: ignore[no-untyped-def]
    messages = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]
    if disconnect:
        messages = [*messages[:-1], {"type": "http.disconnect"}]

    async def receive() -> dict[str, object]:
        await asyncio.sleep(delay)
        return messages.pop(0)

    return receive


async def test_read_body_refuses_a_declared_length_above_the_limit_without_reading() -> None:
    async def never() -> dict[str, object]:
        raise AssertionError("the body must not be read")

    with pytest.raises(BodyTooLarge):
        await read_body(never, {"content-length": "2000"}, max_bytes=1000, deadline=1)


async def test_read_body_counts_chunked_bodies() -> None:
    with pytest.raises(BodyTooLarge):
        await read_body(_receiver([b"x" * 600, b"x" * 600]), {}, max_bytes=1000, deadline=1)
    assert await read_body(_receiver([b"ab", b"cd"]), {}, max_bytes=1000, deadline=1) == b"abcd"


async def test_read_body_has_a_deadline_and_notices_a_disconnect() -> None:
    with pytest.raises(BodyTimeout):
        await read_body(_receiver([b"a", b"b"], delay=0.2), {}, max_bytes=1000, deadline=0.1)
    with pytest.raises(ClientGone):
        await read_body(_receiver([b"a", b"b"], disconnect=True), {}, max_bytes=1000, deadline=1)


async def test_read_body_inflates_gzip_but_not_past_the_limit() -> None:
    body = b"<Envelope/>" * 10
    assert await read_body(_receiver([gzip.compress(body)]), {"content-encoding": "gzip"},
                           max_bytes=1000, deadline=1) == body
    bomb = gzip.compress(b"\0" * 1_000_000)
    with pytest.raises(BodyTooLarge):
        await read_body(_receiver([bomb]), {"content-encoding": "gzip"}, max_bytes=10_000, deadline=1)
