"""``acs sim``: run a simulated CPE fleet against an ACS and report throughput and latency.

Wire it as ``simulator.cli.main(argv)`` (argv without the leading ``sim``); it returns the
process exit code: 0 when the run ended (whatever the sessions did), 1 when no session at all
succeeded, 2 for bad arguments (argparse).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from .config import AuthMode, FleetSettings, HttpMode
from .fleet import Fleet

__all__ = ["build_parser", "format_interval", "format_summary", "main", "settings_from_args"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="acs sim",
        description="Simulate a fleet of TR-069 CPEs (TR-098 and TR-181) against an ACS.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--acs-url", default="http://127.0.0.1:7547/", help="ManagementServer.URL of every device")
    p.add_argument("--devices", type=int, default=100, help="number of simulated CPEs")
    p.add_argument("--model", choices=("tr098", "tr181", "mixed"), default="mixed",
                   help="data model; mixed alternates TR-098 and TR-181")
    p.add_argument("--interval", type=int, default=300,
                   help="default PeriodicInformInterval in seconds (the ACS may change it)")
    # The defaults are the shared first-contact pair of `acs up` (ACS_CPE_USERNAME/PASSWORD), so
    # `acs sim` works against a local stack as it comes.
    p.add_argument("--username", default="testcpe",
                   help="ACS username pattern: {device_id} {serial} {oui} {product_class} {index}")
    p.add_argument("--password", default="testcpe", help="ACS password pattern (same placeholders)")
    p.add_argument("--auth", choices=[m.value for m in AuthMode], default="digest",
                   help="digest: answer the ACS's challenge; basic: pre-emptive Basic; none")
    p.add_argument("--memory", default=".acs/sim-memory.json", metavar="FILE",
                   help="what the devices remember across runs, as a CPE's flash does: the ACS credentials "
                        "they were given at bootstrap (the ACS refuses the shared pair afterwards); "
                        "'' remembers nothing")
    p.add_argument("--serial-prefix", default="SIM", help="serial number = prefix + zero-padded index")
    p.add_argument("--first-index", type=int, default=0, help="index of the first device")
    p.add_argument("--cr-host", default="127.0.0.1", help="address of the connection-request listener")
    p.add_argument("--cr-port", type=int, default=0, help="port of the connection-request listener (0: any)")
    p.add_argument("--cr-username", default="{serial}", help="default ConnectionRequestUsername pattern")
    p.add_argument("--cr-password", default="cr-{serial}", help="default ConnectionRequestPassword pattern")
    p.add_argument("--duration", type=float, default=0.0, help="seconds to run (0: until Ctrl-C)")
    p.add_argument("--ramp", type=float, default=None,
                   help="seconds over which the first boots are spread (default: devices / 100)")
    p.add_argument("--max-sessions", type=int, default=1000, help="concurrent sessions at most")
    p.add_argument("--http-mode", choices=[m.value for m in HttpMode], default="session",
                   help="session: one connection per session; shared: one pool; device: keep-alive per device")
    p.add_argument("--ignore-cookies", action="store_true", help="never send cookies back (like cwmp-sim)")
    p.add_argument("--bool-style", choices=("any", "numeric"), default="any",
                   help="numeric: refuse (9007) SetParameterValues booleans written true/false")
    p.add_argument("--digest-without-qop", action="store_true", help="answer Digest the RFC 2069 way (no qop)")
    p.add_argument("--no-next-level", action="store_true",
                   help="fault (9003) every GetParameterNames with NextLevel=true")
    p.add_argument("--cwmp-version", choices=("1.0", "1.1", "1.2", "1.4"), default="1.2")
    p.add_argument("--jitter", type=float, default=0.05, help="periodic Inform jitter, fraction of the interval")
    p.add_argument("--retry-min-wait", type=int, default=5, help="default CWMPRetryMinimumWaitInterval")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for each ACS answer")
    p.add_argument("--reboot-delay", type=float, default=2.0, help="seconds a reboot keeps a device offline")
    p.add_argument("--sw-version", default="1.0.0", help="SoftwareVersion before any firmware download")
    p.add_argument("--lenient-types", action="store_true",
                   help="accept SetParameterValues whatever the xsi:type (else 9006)")
    p.add_argument("--product-class", default="",
                   help="ProductClass of every device instead of IGD-SIM/DEV-SIM (spaces allowed)")
    p.add_argument("--digest-reuse-nc", action="store_true",
                   help="sloppy Digest client: re-send the first answer (nc=00000001) on every later request")
    p.add_argument("--digest-keep-nonce", action="store_true",
                   help="keep the Digest nonce across sessions: the next Inform carries it with nc + 1")
    p.add_argument("--drop-mid-session", type=int, default=0, metavar="N",
                   help="once per device, drop the TCP connection instead of answering the N-th ACS "
                        "request, then come back at once with a new Inform (0: never)")
    p.add_argument("--credentials-in-url", action="store_true",
                   help="download as wget/curl agents do: Username/Password pasted into the URL, then decoded")
    p.add_argument("--apply-after-reboot", action="append", default=[], metavar="NAME",
                   help="a parameter (relative to the root, e.g. Time.NTPServer1) applied only at the next "
                        "boot: SetParameterValues of it answers Status 1 (repeatable)")
    p.add_argument("--parameters", type=int, default=0, metavar="N",
                   help="grow each device's data model to at least N parameters (a vendor table)")
    p.add_argument("--fail-share", type=float, default=0.0, metavar="SHARE",
                   help="share of the devices (0..1, spread evenly) whose firmware download fails")
    p.add_argument("--fail-fault", type=int, default=9010, help="the fault code of a failing download")
    p.add_argument("--fail-stage", choices=("transfer", "download"), default="transfer",
                   help="transfer: TransferComplete carries the fault; download: the Download RPC is faulted")
    p.add_argument("--offline-share", type=float, default=0.0, metavar="SHARE",
                   help="share of the devices that accept a firmware download, then go offline for good")
    p.add_argument("--download-seconds", type=float, default=0.0, help="extra seconds every download takes")
    p.add_argument("--stun", action="store_true",
                   help="STUN client mode (Annex G): once the ACS sets STUNEnable, learn the UDP connection-request "
                        "address from the STUN server and take UDP connection requests")
    p.add_argument("--behind-nat", action="store_true",
                   help="simulate a carrier-grade NAT: ConnectionRequestURL on 100.64.0.0/10, unreachable "
                        "(use with --stun)")
    p.add_argument("--xmpp-provisioned", action="store_true",
                   help="XMPP client mode (Annex K) with the account the ACS provisions: once the ACS enabled "
                        "Device.XMPP.Connection.{i} (TR-181), log in with it and take XMPP connection requests")
    p.add_argument("--seed", type=int, default=None, help="random seed (jitter, backoff)")
    p.add_argument("--report-every", type=float, default=5.0, help="seconds between report lines")
    p.add_argument("--json", action="store_true", help="print the final summary as JSON")
    return p


def settings_from_args(args: argparse.Namespace) -> FleetSettings:
    ramp = args.ramp if args.ramp is not None else args.devices / 100.0
    return FleetSettings(
        acs_url=args.acs_url, devices=args.devices, model=args.model, first_index=args.first_index,
        serial_prefix=args.serial_prefix, sw_version=args.sw_version, periodic_interval=args.interval,
        jitter=args.jitter, retry_min_wait=args.retry_min_wait, acs_username=args.username,
        acs_password=args.password, memory_file=args.memory, cr_username=args.cr_username, cr_password=args.cr_password,
        auth=AuthMode(args.auth), ignore_cookies=args.ignore_cookies, cwmp_version=args.cwmp_version,
        bool_style=args.bool_style, digest_without_qop=args.digest_without_qop, gpn_next_level=not args.no_next_level,
        strict_types=not args.lenient_types, cr_host=args.cr_host, cr_port=args.cr_port,
        http_mode=HttpMode(args.http_mode), max_sessions=args.max_sessions, http_timeout=args.timeout,
        ramp=ramp, reboot_delay=args.reboot_delay, seed=args.seed, product_class=args.product_class,
        digest_reuse_nc=args.digest_reuse_nc,
        digest_keep_nonce=args.digest_keep_nonce, drop_mid_session=args.drop_mid_session,
        credentials_in_url=args.credentials_in_url, parameters=args.parameters,
        apply_after_reboot=tuple(args.apply_after_reboot),
        fail_share=args.fail_share, fail_fault=args.fail_fault, fail_stage=args.fail_stage,
        offline_share=args.offline_share, download_seconds=args.download_seconds,
        stun=args.stun, behind_nat=args.behind_nat, xmpp_provisioned=args.xmpp_provisioned,
    )


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms"


def format_interval(line: dict[str, Any]) -> str:
    return (f"[{line['elapsed']:8.1f}s] ok {line['ok_per_s']:8.1f}/s  failed {line['failed_per_s']:6.1f}/s  "
            f"in-flight {line['in_flight']:5d}  p50 {_ms(line['p50_ms'])}  p99 {_ms(line['p99_ms'])}")


def format_summary(summary: dict[str, Any]) -> str:
    lat = summary["latency_ms"]
    lag = summary["start_lag_ms"]
    lines = [
        f"sessions: {summary['sessions_ok']} ok ({summary['ok_per_s']}/s), "
        f"{summary['sessions_failed']} failed ({summary['failed_per_s']}/s) in {summary['elapsed_s']} s",
        f"session latency: p50 {_ms(lat['p50'])}, p90 {_ms(lat['p90'])}, p99 {_ms(lat['p99'])}, max {_ms(lat['max'])}",
        f"start lag: p50 {_ms(lag['p50'])}, p99 {_ms(lag['p99'])}; "
        f"max in flight {summary['max_in_flight']}; HTTP requests {summary['http_requests']}",
    ]
    for key in ("failure_reasons", "events", "rpcs", "faults_sent", "connection_requests", "transfers"):
        if summary[key]:
            lines.append(f"{key.replace('_', ' ')}: " + ", ".join(f"{k}={v}" for k, v in summary[key].items()))
    return "\n".join(lines)


async def _run(settings: FleetSettings, duration: float | None, report_every: float, out: TextIO) -> dict[str, Any]:
    fleet = Fleet(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)

    def report(line: dict[str, Any]) -> None:
        print(format_interval(line), file=out, flush=True)

    def banner() -> None:
        # Printed once the listener is bound, so the connection-request URL is the real one.
        print(f"acs sim: {settings.devices} {settings.model} devices -> {settings.acs_url} "
              f"(connection requests on {settings.cr_base_url}/<index>)", file=out, flush=True)

    try:
        summary = await fleet.run(duration, report_every=report_every, report=report, stop=stop,
                                  on_start=banner)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.remove_signal_handler(sig)
    return summary


def _runner() -> asyncio.Runner:
    try:
        import uvloop
    except ImportError:
        return asyncio.Runner()
    return asyncio.Runner(loop_factory=uvloop.new_event_loop)


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = out or sys.stdout
    try:
        settings = settings_from_args(args)
    except ValueError as exc:
        print(f"acs sim: error: {exc}", file=sys.stderr)
        return 2
    with _runner() as runner:
        try:
            summary = runner.run(_run(settings, args.duration or None, args.report_every, out))
        except OSError as exc:  # e.g. the connection-request port is in use
            print(f"acs sim: error: {exc}", file=sys.stderr)
            return 2
    print(format_summary(summary), file=out)
    if args.json:
        print(json.dumps(summary, indent=2), file=out)
    return 0 if summary["sessions_ok"] or not summary["sessions_failed"] else 1


if __name__ == "__main__":
    sys.exit(main())
