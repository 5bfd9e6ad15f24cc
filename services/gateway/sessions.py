"""The gateway's view of one CWMP session: identity, the orchestrator's plan, and timing.

Protocol rules (Inform first, who may send what, cwmp:ID matching) live in the protocol core's
session machine; this object adds what only the gateway knows: which RPCs the orchestrator
planned, whether another plan is owed, and where replies for it arrive.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import deque
from dataclasses import dataclass, field

from cwmp.session import AcsSession
from services.bus.events import PlannedRpc, SessionPlan


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
    _plan_arrived: asyncio.Event = field(default_factory=asyncio.Event)
    # Serialises requests of one session (a CPE must not pipeline; a confused one might).
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def touch(self) -> None:
        self.last_activity = time.monotonic()

    def receive_plan(self, plan: SessionPlan) -> None:
        self.queue.extend(plan.rpcs)
        self.rpcs_planned += len(plan.rpcs)
        # A plan without RPCs cannot be followed by responses, so nothing more can be owed.
        self.more_after_queue = plan.more and bool(plan.rpcs)
        self.plan_owed = False
        self._plan_arrived.set()

    async def next_rpc(self, wait: float) -> PlannedRpc | None:
        """The next planned RPC, waiting up to ``wait`` seconds for an owed plan.

        None means the session can end: the plan is exhausted, or the orchestrator did not
        answer in time (``plan_timed_out``), in which case the work waits for the next session.
        """
        if not self.queue and self.more_after_queue:
            # Every RPC of the last plan has been answered: the orchestrator now owes the next.
            self.more_after_queue = False
            self.plan_owed = True
        if not self.queue and self.plan_owed:
            self._plan_arrived.clear()
            try:
                async with asyncio.timeout(wait):
                    while self.plan_owed:
                        await self._plan_arrived.wait()
                        self._plan_arrived.clear()
            except TimeoutError:
                self.plan_timed_out = True
                self.plan_owed = False
                return None
        if not self.queue:
            return None
        self.outstanding = self.queue.popleft()
        return self.outstanding

    def unsent_rpc_ids(self) -> list[str]:
        return [planned.rpc_id for planned in self.queue]
