"""The device's own ACS credentials at bootstrap: minted, set in their own SPV, confirmed by its
answer, tolerated when refused, dropped by a factory reset; and what the credential store learns."""

from __future__ import annotations

import dataclasses
from typing import Any

from services.orchestrator import cpecreds
from services.orchestrator.state import DeviceState, Env, PlanConfig
from services.orchestrator.tasks import TaskStatus
from tests.unit.orchestrator.orchestrator_builders import (
    DEVICE,
    IGD,
    Clock,
    Harness,
    gpn_response,
    gpv_response,
    inform,
    make_task,
)

MS = f"{IGD}ManagementServer."
KEY = "test-secret-key-0123456789"


class KeyedClock(Clock):
    def env(self) -> Env:
        return dataclasses.replace(super().env(), cpe_password=lambda user, nonce: cpecreds.derive_password(
            KEY, user, nonce))


def _answers(rpc: dict[str, Any]) -> dict[str, Any]:
    if rpc["method"] == "SetParameterValues":
        return {"method": "SetParameterValuesResponse", "status": 0}
    if rpc["method"] == "GetParameterNames":
        return gpn_response({f"{rpc['parameter_path']}X": False})
    return gpv_response({name: "v" for name in rpc["parameter_names"]})


def _harness(cfg: PlanConfig) -> Harness:
    return Harness(KeyedClock(), dataclasses.replace(cfg, provision_cpe_credentials=True))


def test_bootstrap_sets_the_device_own_acs_credentials_and_their_answer_confirms_them(cfg: PlanConfig) -> None:
    h = _harness(cfg)
    plan = h.inform(inform("0 BOOTSTRAP", "1 BOOT"))
    assert [p.rpc["method"] for p in plan.rpcs] == ["SetParameterValues", "SetParameterValues",
                                                    "GetParameterNames", "GetParameterNames"]
    own = {v["name"]: v["value"]["value"] for v in plan.rpcs[1].rpc["parameter_list"]}
    assert h.device is not None and h.device.pending_cpe_username == DEVICE
    nonce = h.device.pending_cpe_nonce
    assert nonce and own == {f"{MS}Username": DEVICE, f"{MS}Password": cpecreds.derive_password(KEY, DEVICE, nonce)}
    # Nothing that is stored holds the password; the store learns of the pending pair first.
    assert own[f"{MS}Password"] not in str(h.device.to_document())
    assert cpecreds.changes(None, h.device) == [cpecreds.CredentialChange("pending", DEVICE, DEVICE, nonce)]

    before = h.device
    h.respond(plan.rpcs[0].rpc_id, _answers(plan.rpcs[0].rpc))
    assert h.device.cpe_username is None  # the connection request SPV confirms nothing of these
    h.respond(plan.rpcs[1].rpc_id, _answers(plan.rpcs[1].rpc))
    assert (h.device.cpe_username, h.device.cpe_nonce, h.device.pending_cpe_nonce) == (DEVICE, nonce, None)
    assert cpecreds.changes(before, h.device) == [cpecreds.CredentialChange("confirmed", DEVICE, DEVICE, nonce)]
    for planned in plan.rpcs[2:]:
        follow = h.respond(planned.rpc_id, _answers(planned.rpc))
    while follow is not None:
        follow = h.answer_all(follow, _answers)
    task = h.task_named("bootstrap")
    assert task.status is TaskStatus.SUCCEEDED and task.result["cpe_credentials"] == "set"
    assert own[f"{MS}Password"] not in repr(task.public())


def test_a_retried_bootstrap_sends_the_same_pair_and_a_new_bootstrap_a_new_one(cfg: PlanConfig) -> None:
    h = _harness(cfg)
    first = h.inform(inform("0 BOOTSTRAP", "1 BOOT"))
    h.end("dropped", unanswered=[first.rpcs[0].rpc_id])  # gone before answering anything
    h.clock.advance(3600)  # past the retry's backoff
    again = h.inform(inform("1 BOOT", session="s2"))
    assert again.rpcs[1].rpc == first.rpcs[1].rpc  # the CPE may have applied it: same password
    assert h.device is not None
    nonce = h.device.pending_cpe_nonce
    h.end("dropped", unanswered=[again.rpcs[0].rpc_id], session="s2")
    h.clock.advance(3600)
    h.inform(inform("0 BOOTSTRAP", session="s3"))
    assert h.device.pending_cpe_nonce not in (None, nonce)


def test_a_cpe_that_refuses_its_own_credentials_keeps_the_shared_pair_and_the_bootstrap_goes_on(
        cfg: PlanConfig) -> None:
    h = _harness(cfg)
    plan = h.inform(inform("0 BOOTSTRAP", "1 BOOT"))
    h.respond(plan.rpcs[0].rpc_id, _answers(plan.rpcs[0].rpc))
    h.fault(plan.rpcs[1].rpc_id, 9008, method="SetParameterValues", string="read-only")
    follow = None
    for planned in plan.rpcs[2:]:
        follow = h.respond(planned.rpc_id, _answers(planned.rpc))
    while follow is not None:
        follow = h.answer_all(follow, _answers)
    task = h.task_named("bootstrap")
    assert task.status is TaskStatus.SUCCEEDED
    assert task.result["errors"][0]["code"] == 9008 and "cpe_credentials" not in task.result
    assert h.device is not None and h.device.cpe_username is None and h.device.cr_username


def test_a_factory_reset_drops_the_device_own_credentials(cfg: PlanConfig) -> None:
    h = _harness(cfg)
    h.device = DeviceState(id=DEVICE, data_model=IGD, cpe_username=DEVICE, cpe_nonce="n1", cr_username="u",
                           cr_password="p")
    h.add(make_task("factoryReset", {}))
    plan = h.inform(inform("2 PERIODIC"))
    before = h.device
    assert [p.rpc["method"] for p in plan.rpcs] == ["FactoryReset"]
    h.respond(plan.rpcs[0].rpc_id, {"method": "FactoryResetResponse"})
    assert h.device is not None and (h.device.cpe_username, h.device.cpe_nonce) == (None, None)
    assert cpecreds.changes(before, h.device) == [cpecreds.CredentialChange("forgotten", DEVICE)]


def test_without_the_setting_no_acs_credentials_are_set(cfg: PlanConfig) -> None:
    h = Harness(KeyedClock(), cfg)
    plan = h.inform(inform("0 BOOTSTRAP", "1 BOOT"))
    assert [p.rpc["method"] for p in plan.rpcs].count("SetParameterValues") == 1
    assert h.device is not None and h.device.pending_cpe_nonce is None


def test_derived_passwords_depend_on_key_user_and_nonce() -> None:
    one = cpecreds.derive_password(KEY, "u", "n")
    assert len(one) == 32 and one == cpecreds.derive_password(KEY, "u", "n")
    assert len({one, cpecreds.derive_password(KEY, "u", "m"), cpecreds.derive_password(KEY, "v", "n"),
                cpecreds.derive_password(KEY + "x", "u", "n")}) == 4
