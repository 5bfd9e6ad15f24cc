"""Profiles benchmark: the orchestrator's decision time per routine Inform with 0, 100 and 1,000
configuration profiles, 10 of them matching the device (issue #17; target p99 < 2 ms with 1,000 on
one core).

The decision is ``planner.on_inform`` on a loaded view, as the engine calls it: the compiled
profile set comes from the engine's cache (built once per change, not per Inform), the device
already converged (its accepted digests stored), so each Inform merges the matching profiles,
renders their templates and finds nothing to send. Of the non-matching profiles, 90 % select on a
device field (indexed: never evaluated) and 10 % on an Inform parameter (evaluated every time).
The device's variables are loaded by the engine (one read, not timed here).

    python benchmarks/profiles.py [--informs 5000] [--counts 0,100,1000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.bus.events import DeviceIdentity, InformEventCode, InformReceived, ParameterValue
from services.common.settings import Settings
from services.orchestrator import planner
from services.orchestrator import profiles as P
from services.orchestrator.state import DeviceState, Env, PlanConfig

T0 = datetime(2026, 1, 1, tzinfo=UTC)
ROOT = "InternetGatewayDevice."
DEVICE = "00D09E-IGD%2DSIM-000042"
PARAMS = {f"{ROOT}DeviceInfo.SoftwareVersion": ("2.1.0", "xsd:string"),
          f"{ROOT}DeviceInfo.HardwareVersion": ("1.0", "xsd:string"),
          f"{ROOT}DeviceInfo.ProvisioningCode": ("RES", "xsd:string"),
          f"{ROOT}DeviceInfo.UpTime": ("86400", "xsd:unsignedInt"),
          f"{ROOT}ManagementServer.ParameterKey": ("profile", "xsd:string"),
          f"{ROOT}ManagementServer.ConnectionRequestURL": ("http://10.0.0.42:7547/", "xsd:string"),
          f"{ROOT}WANDevice.1.WANConnectionDevice.1.WANIPConnection.1.ExternalIPAddress": ("10.1.2.3", "xsd:string")}


def _profiles(count: int, matching: int = 10) -> list[P.Profile]:
    out = []
    for i in range(count):
        if i < matching:
            selector: dict[str, object] = ({"product_class": "IGD-SIM"} if i % 3 == 0 else
                                           {"oui": "00D09E", "DeviceInfo.SoftwareVersion": {"$gte": "2"}}
                                           if i % 3 == 1 else {"DeviceInfo.ProvisioningCode": "RES"})
        elif i % 10 == 0:
            selector = {"DeviceInfo.ProvisioningCode": f"OTHER-{i}"}  # not indexable: evaluated
        else:
            selector = {"product_class": f"Model-{i}"}  # indexed: never looked at for this device
        parameters = [P.DesiredParameter(name=f"X_Bench.P{i}.Value{j}", value=f"v{j}-{{serial_number}}")
                      for j in range(4)]
        parameters.append(P.DesiredParameter(name="ManagementServer.PeriodicInformInterval", value=600 + i))
        out.append(P.Profile(id=f"p{i}", name=f"profile-{i}", priority=i, selector=selector, parameters=parameters,
                             created_at=T0, updated_at=T0))
    return out


def _inform(n: int) -> InformReceived:
    return InformReceived(device_id=DEVICE, session_id=f"s{n}", gateway_id="gw", reply_to="cwmp.replies:0",
                          device=DeviceIdentity(manufacturer="SimCPE", oui="00D09E", product_class="IGD-SIM",
                                                serial_number="000042"),
                          events=[InformEventCode(code="2 PERIODIC")],
                          parameters=[ParameterValue(name=k, value=v, type=t) for k, (v, t) in PARAMS.items()])


def run(count: int, informs: int) -> tuple[list[float], int]:
    cfg = PlanConfig.from_settings(Settings())
    ids = iter(range(10**9))
    env = Env(now=T0, new_id=lambda: f"id{next(ids)}", new_secret=lambda: "s",
              mint_credentials=lambda name, device: ("u", "p"), upload_url=lambda name: "http://x/")
    device = DeviceState(id=DEVICE, oui="00D09E", product_class="IGD-SIM", serial_number="000042",
                         manufacturer="SimCPE", data_model=ROOT, software_version="2.1.0", first_seen=T0,
                         last_inform=T0, bootstrapped_at=T0)
    given = P.ProfileInput(P.ProfileSet(_profiles(count)))
    # Converge once (the first Inform plans the values; their task succeeds), then time routine Informs.
    first = planner.on_inform(_inform(0), device, [], [], frozenset(), [], env, cfg, given)
    device = first.device or device
    for task in first.new_tasks:
        if task.origin == P.PROFILE_ORIGIN:
            device = device.model_copy(update={"profile_applied": {**device.profile_applied,
                                                                   **task.args["profile"]["digests"]}})
    timings: list[float] = []
    planned = 0
    for n in range(1, informs + 1):
        event = _inform(n)
        started = time.perf_counter()
        decision = planner.on_inform(event, device, [], [], frozenset(), [], env, cfg, given)
        timings.append(time.perf_counter() - started)
        planned += len(decision.plan.rpcs) if decision.plan else 0
    return timings, planned


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--informs", type=int, default=5000)
    parser.add_argument("--counts", default="0,100,1000")
    args = parser.parse_args()
    print("| profiles | matching | p50 | p99 | max | RPCs planned (routine) |")
    print("|---|---|---|---|---|---|")
    for count in (int(c) for c in args.counts.split(",")):
        timings, planned = run(count, args.informs)
        ordered = sorted(timings)
        p99 = ordered[int(len(ordered) * 0.99) - 1]
        print(f"| {count:,} | {min(count, 10)} | {statistics.median(timings) * 1e6:,.0f} µs | "
              f"{p99 * 1e6:,.0f} µs | {ordered[-1] * 1e6:,.0f} µs | {planned} |")


if __name__ == "__main__":
    main()
