"""Profile convergence at scale: the whole ACS, a simulated fleet, one profile, compliance over time.

    python benchmarks/profile_convergence.py [--devices 1000] [--seconds 600] [--objects]

Starts the whole ACS in this machine (``acs.up.LocalAcs``, as ``acs bench`` does: Kafka, MongoDB,
S3 and the services, on free ports, in a temporary directory), creates one profile for both data
models by relative names (two NTP servers, one of them a template, and with ``--objects`` a
PortMapping instance per data model), then starts half the devices as TR-098 and half as TR-181
and prints every few seconds how many are compliant: by the ACS's compliance counts and by the
devices' own values. At the end: the time until all were compliant, sessions per device (all, and
until each device held the desired values), and the RPCs per session. Outside the default suite.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

# Runnable as a script from anywhere: the repository's packages are imported from its root.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
import psutil

from acs.infra import free_port
from simulator.config import FleetSettings
from simulator.device import Device
from simulator.fleet import Fleet

NTP1, NTP2 = "ntp1.example.net", "ntp-{serial_number}.example.net"
PORT_TABLES = {"tr098": ("WANDevice.1.WANConnectionDevice.1.WANIPConnection.1.PortMapping.", "PortMappingProtocol"),
               "tr181": ("NAT.PortMapping.", "Protocol")}


def device_compliant(device: Device, objects: bool) -> bool:
    root = device.model.root_path
    if device.model.get_or(f"{root}Time.NTPServer1", "") != NTP1:
        return False
    if device.model.get_or(f"{root}Time.NTPServer2", "") != NTP2.replace("{serial_number}", device.serial):
        return False
    if objects:
        table = root + PORT_TABLES[device.settings.model][0]
        ports = [device.model.get(i.name) for i in device.model.get_parameter_names(table, False)
                 if i.name.endswith(".ExternalPort")]
        return ports == ["8080"]
    return True


async def run(args: argparse.Namespace) -> int:
    from acs.up import LocalAcs

    root = Path(tempfile.mkdtemp(prefix="acs-profiles-"))
    os.environ.setdefault("ACS_LOG_LEVEL", "WARNING")
    os.environ.setdefault("ACS_CPE_PASSWORD", "bench-cpe-password")
    os.environ["ACS_PERIODIC_INFORM_INTERVAL"] = str(args.interval)
    for setting in ("INVENTORY", "ORCHESTRATOR", "FILESERVER", "GATEWAY", "GATEWAY_ADMIN", "CONSOLE", "API",
                    "DOWNLOADS"):
        os.environ.setdefault(f"ACS_{setting}_PORT", str(free_port()))
    acs = LocalAcs(root)
    fleets: list[Fleet] = []
    try:
        settings = await asyncio.to_thread(acs.start)
        api = httpx.AsyncClient(base_url=f"http://127.0.0.1:{settings.api_port}/api/v1", timeout=30.0,
                                headers={"Authorization": f"Bearer {os.environ['ACS_ADMIN_API_KEY']}"})
        classes = {"tr098": "CONV-IGD", "tr181": "CONV-DEV"}
        body: dict[str, Any] = {
            "name": "convergence", "priority": 100, "selector": {"product_class": {"$in": list(classes.values())}},
            "parameters": [{"name": "Time.NTPServer1", "value": NTP1}, {"name": "Time.NTPServer2", "value": NTP2}]}
        created = await api.post("/profiles", json=body)
        created.raise_for_status()
        profile_ids = [created.json()["id"]]
        if args.objects:
            for n, (model, (table, protocol)) in enumerate(PORT_TABLES.items()):
                made = await api.post("/profiles", json={
                    "name": f"portmap-{model}", "priority": 200 + n, "selector": {"product_class": classes[model]},
                    "objects": [{"path": table, "keys": [{"name": "ExternalPort", "value": 8080},
                                                         {"name": protocol, "value": "TCP"}],
                                 "values": [{"name": "InternalPort", "value": 80},
                                            {"name": "InternalClient", "value": "192.168.1.10"}]}]})
                made.raise_for_status()
                profile_ids.append(made.json()["id"])
        gateway = f"http://127.0.0.1:{settings.gateway_port}/"
        half = args.devices // 2
        for model, count in (("tr098", half), ("tr181", args.devices - half)):
            fleets.append(Fleet(FleetSettings(
                acs_url=gateway, devices=count, model=model, product_class=classes[model],
                serial_prefix=classes[model][-3:], acs_username=settings.cpe_username,
                acs_password=settings.cpe_password, periodic_interval=args.interval, seed=3,
                ramp=args.ramp, max_sessions=args.max_sessions, keep_records=args.devices * 20)))
        sessions: Counter[str] = Counter()  # every session a device began, refused ones included
        accepted: Counter[str] = Counter()  # sessions whose Inform the ACS took
        rpcs: Counter[str] = Counter()
        until: dict[str, int] = {}  # device -> sessions it took until it held the desired values
        until_accepted: dict[str, int] = {}  # the same, counting only sessions the ACS took

        failures: Counter[str] = Counter()
        informs: Counter[str] = Counter()  # event codes of the sessions after a device's first

        def on_session(device: Any, record: Any, _session: Any) -> None:
            key = f"{device.settings.model}:{record.device}"
            if not record.ok:
                failures[record.reason or "?"] += 1
            if sessions[key] and key not in until:
                informs[",".join(record.events)] += 1
            sessions[key] += 1
            accepted[key] += int(bool(record.inform_acked))
            rpcs[key] += int(record.rpcs or 0)
            if key not in until and device_compliant(device, args.objects):
                until[key] = sessions[key]
                until_accepted[key] = accepted[key]

        for fleet in fleets:
            fleet.session_listeners.append(on_session)
        processes = {name: psutil.Process(pid) for name, pid in {**acs.pids(), "simulator": os.getpid()}.items()}
        cpu_before = {name: _cpu(p) for name, p in processes.items()}
        started = time.monotonic()
        await asyncio.gather(*(fleet.start() for fleet in fleets))
        everyone = [d for fleet in fleets for d in fleet.devices]
        print(f"{'t (s)':>6} {'devices ok':>10} {'ACS compliant':>13} {'pending':>7} {'failing':>7} "
              f"{'sessions':>8}", flush=True)
        done_at = None
        while time.monotonic() - started < args.seconds:
            await asyncio.sleep(args.every)
            counts: Counter[str] = Counter()
            per_profile: dict[str, int] = {}
            for pid in profile_ids:
                found = (await api.get(f"/profiles/{pid}/compliance")).json()["counts"]
                counts.update(found)
                per_profile[pid] = int(found["compliant"])
            ok = sum(device_compliant(d, args.objects) for d in everyone)
            # The ACS's word: compliant with the NTP profile (and, with --objects, with its model's
            # PortMapping profile too, which the lower of the two counts bounds).
            acs_ok = per_profile[profile_ids[0]] if not args.objects else min(
                per_profile[profile_ids[0]], sum(per_profile[p] for p in profile_ids[1:]))
            print(f"{time.monotonic() - started:6.0f} {ok:10d} {acs_ok:13d} {counts['pending']:7d} "
                  f"{counts['failing']:7d} {sum(sessions.values()):8d}", flush=True)
            if ok == len(everyone) and acs_ok >= len(everyone) and done_at is None:
                done_at = time.monotonic() - started
                break
        per_device = [sessions.get(f"{d.settings.model}:{d.index}", 0) for d in everyone]
        needed = list(until.values())
        print(f"\n{len(everyone)} devices ({half} TR-098, {len(everyone) - half} TR-181), profile"
              f"{'s' if len(profile_ids) > 1 else ''}: {len(profile_ids)}")
        print(f"all compliant after: {f'{done_at:.0f} s' if done_at is not None else 'not within the limit'}")
        print(f"sessions per device: mean {statistics.mean(per_device):.2f}, max {max(per_device)}")
        if needed:
            print(f"sessions until compliant: mean {statistics.mean(needed):.2f}, max {max(needed)}, "
                  f"in one session: {sum(1 for n in needed if n == 1)} of {len(needed)}")
            taken = list(until_accepted.values())
            print(f"sessions the ACS took until compliant: mean {statistics.mean(taken):.2f}, max {max(taken)}, "
                  f"in the first: {sum(1 for n in taken if n == 1)} of {len(taken)}")
        if failures:
            print("failed sessions: " + ", ".join(f"{n} {r}" for r, n in failures.most_common(5)))
        if informs:
            print("later sessions of devices not yet compliant, by events: " +
                  ", ".join(f"{n} {e}" for e, n in informs.most_common(5)))
        total_sessions = sum(accepted.values())
        if total_sessions:
            used = {name: _cpu(p) - cpu_before[name] for name, p in processes.items()}
            print("CPU ms per session the ACS took: " + ", ".join(
                f"{name} {1000 * seconds / total_sessions:.1f}" for name, seconds in
                sorted(used.items(), key=lambda item: -item[1])))
        print(f"RPCs per session the ACS took: {sum(rpcs.values()) / total_sessions:.1f}" if total_sessions
              else "no sessions")
        await api.aclose()
        return 0 if done_at is not None else 1
    finally:
        for fleet in fleets:
            await fleet.stop()
        await asyncio.to_thread(acs.stop)
        shutil.rmtree(root, ignore_errors=True)


def _cpu(process: psutil.Process) -> float:
    try:
        times = process.cpu_times()
        return float(times.user + times.system + times.children_user + times.children_system)
    except psutil.Error:
        return 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=600.0, help="give up after this long")
    parser.add_argument("--interval", type=int, default=3600, help="periodic inform interval of the devices")
    parser.add_argument("--ramp", type=float, default=60.0, help="first boots spread over this many seconds")
    parser.add_argument("--max-sessions", type=int, default=200)
    parser.add_argument("--every", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--objects", action="store_true", help="also a PortMapping instance per device")
    return asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
