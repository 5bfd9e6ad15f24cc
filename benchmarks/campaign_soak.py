"""Campaign soak: the issue's end-to-end run at its size, 2,000 simulated CPEs against a running ACS.

    acs up                      # in another terminal (or any deployment)
    python benchmarks/campaign_soak.py [--devices 2000] [--fail-share 0.3] [--cap 200]

Reads ACS_ADMIN_API_KEY, ACS_CPE_USERNAME, ACS_CPE_PASSWORD and the ports (ACS_API_PORT,
ACS_GATEWAY_PORT) like the services do (environment or .env); ``--api-url`` and ``--gateway-url``
override them. The fleet runs in this process (simulator.fleet).

1. The devices boot and bootstrap; a firmware image is uploaded for their product class.
2. Without ``--fail-share``: a campaign of three waves (canary 2 %, 20 %, the rest) upgrades
   every device; printed: the time per wave, the peak of devices in flight (progress samples and
   the fileserver's download records) against the cap, and whether every device ends on the
   target version.
3. With ``--fail-share S``: that share of the devices fails its download (9010); the campaign
   must pause itself in its second wave with the stop rule's reason; the share is then removed,
   the campaign resumed, the failed devices retried, and every device must end upgraded.
Exit status 1 when an expectation does not hold.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

# Runnable as a script from anywhere: the repository's packages are imported from its root.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx

from services.common.settings import Settings
from simulator.config import FleetSettings
from simulator.fleet import Fleet

TARGET = "9.9.9"


def max_overlap(spans: list[tuple[datetime, datetime]]) -> int:
    edges = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans], key=lambda e: (e[0], e[1]))
    peak = current = 0
    for _, step in edges:
        current += step
        peak = max(peak, current)
    return peak


async def wait(probe: Any, seconds: float, what: str, step: float = 1.0) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if result := await probe():
            return result
        await asyncio.sleep(step)
    raise SystemExit(f"timed out after {seconds:.0f} s waiting for {what}")


async def run(args: argparse.Namespace) -> bool:
    settings = Settings()
    api_url = args.api_url or f"http://127.0.0.1:{settings.api_port}/api/v1"
    gateway_url = args.gateway_url or f"http://127.0.0.1:{settings.gateway_port}/"
    prefix = "SOAK" + uuid.uuid4().hex[:6].upper()
    fleet = Fleet(FleetSettings(acs_url=gateway_url, devices=args.devices, serial_prefix=prefix, model="tr098",
                                acs_username=settings.cpe_username, acs_password=settings.cpe_password,
                                periodic_interval=3600, reboot_delay=1.0, ramp=args.devices / 100,
                                fail_share=args.fail_share))
    ok = True
    async with httpx.AsyncClient(base_url=api_url, timeout=60,
                                 headers={"Authorization": f"Bearer {settings.admin_api_key}"}) as api:
        await fleet.start()
        try:
            query = {"serial_number": {"$prefix": prefix}}
            began = time.monotonic()

            async def registered() -> bool:
                count = (await api.get("/devices/count", params={"q": json.dumps(query)})).json()["count"]
                return bool(count == args.devices)

            await wait(registered, 600, "every device in the inventory")

            async def bootstrapped() -> bool:
                # A device is woken with the connection-request credentials its bootstrap sets.
                done = 0
                cursor = None
                while True:
                    params: dict[str, Any] = {"name": "bootstrap", "status": "succeeded", "limit": 500}
                    if cursor:
                        params["cursor"] = cursor
                    page = (await api.get("/tasks", params=params)).json()
                    done += sum(prefix in t["device_id"] for t in page["tasks"])
                    cursor = page["next_cursor"]
                    if not cursor:
                        return done >= args.devices

            await wait(bootstrapped, 600, "every device bootstrapped", step=3.0)
            print(f"{args.devices} devices registered in {time.monotonic() - began:.0f} s")
            name = f"soak-{prefix}-{TARGET}.bin"
            put = await api.put(f"/files/{name}", content=os.urandom(300_000),
                                params={"file_type": "1 Firmware Upgrade Image", "version": TARGET,
                                        "product_class": "IGD-SIM"})
            assert put.status_code == 201, put.text
            body = {"name": "soak", "query": query, "firmware": [{"product_class": "IGD-SIM", "file_name": name}],
                    "canary": {"percent": 2}, "waves": [{"percent": 20}, {"percent": 100}],
                    "gates": {"min_success_rate": 0.5},
                    "stop": {"max_failure_rate": 0.2, "window": max(20, args.devices // 40)},
                    "limits": {"max_in_flight": args.cap, "connection_requests_per_second": args.rate,
                               "device_timeout_seconds": 300}}
            created = await api.post("/campaigns", json=body)
            assert created.status_code == 201, created.text
            cid = created.json()["id"]
            peak = 0
            waves: dict[int, float] = {}

            async def until(states: tuple[str, ...]) -> dict[str, Any]:
                nonlocal peak

                async def probe() -> dict[str, Any] | None:
                    nonlocal peak
                    progress = (await api.get(f"/campaigns/{cid}/progress")).json()
                    peak = max(peak, progress["downloads_in_flight"])
                    waves.setdefault(progress["wave"], time.monotonic())
                    return progress if progress["state"] in states else None

                result: dict[str, Any] = await wait(probe, args.timeout, f"the campaign to be {states}", 0.5)
                return result

            started = time.monotonic()
            if args.fail_share:
                paused = await until(("paused", "completed"))
                print(f"paused: wave {paused['wave']}, reason {paused['reason']!r}, counts {paused['counts']}")
                ok &= paused["state"] == "paused" and paused["wave"] == 1 and paused["reason"].startswith("stop rule")
                fleet.settings.fail_share = 0.0
                await api.post(f"/campaigns/{cid}/resume")
                await until(("completed",))
                await api.post(f"/campaigns/{cid}/retry-failed")
                await asyncio.sleep(2)
            done = await until(("completed",))
            print(f"completed in {time.monotonic() - started:.0f} s: {done['counts']}")
            for number in sorted(waves):
                print(f"  wave {number} began at +{waves[number] - started:.0f} s")
            records = (await api.get(f"/files/{name}/downloads", params={"limit": 1000})).json()["downloads"]
            spans = [(datetime.fromisoformat(r["finished_at"]) - timedelta(seconds=r["duration_seconds"]),
                      datetime.fromisoformat(r["finished_at"])) for r in records]
            print(f"devices in flight, peak of the progress samples: {peak} (cap {args.cap}); downloads at once "
                  f"in the fileserver's last {len(records)} records: {max_overlap(spans) if spans else 0}")
            on_target = sum((cpe.sw_version or "") == TARGET for cpe in fleet.devices)
            print(f"devices on {TARGET}: {on_target} of {args.devices}")
            ok &= peak <= args.cap and on_target == args.devices and done["counts"]["upgraded"] == args.devices
        finally:
            await fleet.stop()
    print("OK" if ok else "FAILED")
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=2000)
    parser.add_argument("--fail-share", type=float, default=0.0)
    parser.add_argument("--cap", type=int, default=200, help="max_in_flight of the campaign")
    parser.add_argument("--rate", type=float, default=50, help="connection requests per second")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds for each phase of the campaign")
    parser.add_argument("--api-url")
    parser.add_argument("--gateway-url")
    args = parser.parse_args()
    sys.exit(0 if asyncio.run(run(args)) else 1)


if __name__ == "__main__":
    main()
