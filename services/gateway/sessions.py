"""The gateway's view of one CWMP session: identity, the orchestrator's plan, and timing.

Protocol rules (Inform first, who may send what, cwmp:ID matching) live in the protocol core's
session machine; this object adds what only the gateway knows: which RPCs the orchestrator
planned, whether another plan is owed, and where replies for it arrive.

Plans are idempotent here. The orchestrator answers an event Kafka delivered twice with the very
same plan, and a plan may itself be delivered twice; an RPC sent twice would run twice on the
CPE (an AddObject, a Download). So a plan already received (same ``in_reply_to``) is ignored,
and so is every RPC whose id was queued before, whether it is still queued, sent or answered.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from cwmp.session import AcsSession
from services.bus.events import PlannedRpc, SessionPlan
from services.common.quirks import NO_QUIRKS, NameCase, Quirks, rename


def new_session_id() -> str:
    # Unguessable: the cookie is what proves that a request belongs to an authenticated session.
    return secrets.token_urlsafe(24)


@dataclass
class GatewaySession:
    session_id: str
    device_id: str
    cwmp_ns: str
    connection_key: str
    remote_address: str
    machine: AcsSession
    username: str | None = None
    # (algorithm, HA1) that authenticated the Inform with the device's own credentials: still
    # accepted inside this session after the bootstrap replaced them (the CPE may go on with the
    # pair it started the session with).
    auth_ha1: tuple[str, str] | None = None
    # The device's entry of the quirks table, read at its Inform (services/common/quirks.py).
    quirks: Quirks = NO_QUIRKS
    name_case: NameCase | None = None
    started: float = field(default_factory=time.monotonic)
    last_activity: float = field(default_factory=time.monotonic)
    last_lock_refresh: float = field(default_factory=time.monotonic)
    # Plans from the orchestrator.
    queue: deque[PlannedRpc] = field(default_factory=deque)
    plan_owed: bool = True  # The Inform's plan is owed as soon as the Inform is published.
    more_after_queue: bool = False
    plan_timed_out: bool = False
    rpcs_planned: int = 0  # RPCs received in plans; with none, a completed session needs no end event
    outstanding: PlannedRpc | None = None
    closed: bool = False  # ended: nothing more is sent, a request waiting for a plan gives up
    _plans_seen: set[str] = field(default_factory=set)  # in_reply_to of every plan received
    _rpc_ids: set[str] = field(default_factory=set)  # every RPC id ever queued in this session
    _plan_arrived: asyncio.Event = field(default_factory=asyncio.Event)
    # Serialises requests of one session (a CPE must not pipeline; a confused one might).
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def touch(self) -> None:
        self.last_activity = time.monotonic()

    def receive_plan(self, plan: SessionPlan) -> bool:
        """Queue the plan's new RPCs; False when it was a duplicate and changed nothing."""
        if plan.in_reply_to in self._plans_seen:
            return False
        fresh = [planned for planned in plan.rpcs if planned.rpc_id not in self._rpc_ids]
        if plan.rpcs and not fresh:
            # Every RPC was queued before: a replay under another in_reply_to. Taking its `more`
            # would also undo the owed next plan (and end the session early).
            return False
        self._plans_seen.add(plan.in_reply_to)
        self._rpc_ids.update(planned.rpc_id for planned in fresh)
        self.queue.extend(fresh)
        self.rpcs_planned += len(fresh)
        # A plan without RPCs cannot be followed by responses, so nothing more can be owed.
        self.more_after_queue = plan.more and bool(fresh)
        self.plan_owed = False
        self._plan_arrived.set()
        return True

    def close(self) -> None:
        """The session ended: wake a request that waits for a plan, so that it gives up now."""
        self.closed = True
        self._plan_arrived.set()

    async def next_rpc(self, wait: float) -> PlannedRpc | None:
        """The next planned RPC, waiting up to ``wait`` seconds for an owed plan.

        None means the session can end: the plan is exhausted, or the orchestrator did not
        answer in time (``plan_timed_out``), in which case the work waits for the next session.
        """
        if self.closed:
            return None
        if not self.queue and self.more_after_queue:
            # Every RPC of the last plan has been answered: the orchestrator now owes the next.
            self.more_after_queue = False
            self.plan_owed = True
        if not self.queue and self.plan_owed:
            self._plan_arrived.clear()
            try:
                async with asyncio.timeout(wait):
                    while self.plan_owed and not self.closed:
                        await self._plan_arrived.wait()
                        self._plan_arrived.clear()
            except TimeoutError:
                self.plan_timed_out = True
                self.plan_owed = False
                return None
        if not self.queue or self.closed:
            return None
        self.outstanding = self.queue.popleft()
        return self.outstanding

    def model_name(self, name: str) -> str:
        """A name the CPE reported, in the data model's case (quirk parameter_case)."""
        return self.name_case.to_model(name) if self.name_case is not None else name

    def model_names(self, rpc: dict[str, Any]) -> dict[str, Any]:
        return rename(rpc, self.name_case.to_model) if self.name_case is not None else rpc

    def cpe_rpc(self, rpc: dict[str, Any]) -> dict[str, Any]:
        """A planned RPC with its names spelled this CPE's way (boolean literals: the machine's
        ``boolean_literal``, set from the quirks at the Inform)."""
        return rename(rpc, self.name_case.to_cpe) if self.name_case is not None else rpc

    def unsent_rpc_ids(self) -> list[str]:
        return [planned.rpc_id for planned in self.queue]
