"""Codec throughput on one core: parse a 10-parameter Inform and build its InformResponse.

    python benchmarks/codec.py [--repeat 7] [--number 5000]

Prints operations per second for parse+build, parse only and build only, for a compact Inform
(as most CPE agents send it) and for easycwmp's pretty-printed Inform from ../shared/interop
when that file is there. Each figure is the best of ``--repeat`` runs, which filters out noise
from other processes; the median is printed alongside.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cwmp import (  # noqa: E402 - after the path setup, so that the script runs from a checkout
    CWMP_NS_1_0,
    DeviceId,
    EventStruct,
    Inform,
    InformResponse,
    ParameterValue,
    ParameterValueStruct,
    build_envelope,
    parse_envelope,
)

EASYCWMP_INFORM = REPO.parent / "shared" / "interop" / "easycwmp_inform_0BOOTSTRAP_1BOOT_digest.xml"


def compact_inform() -> bytes:
    """A TR-181 Inform with the forced-inform parameters plus a few more: ten in all."""
    params = [
        ("Device.DeviceInfo.SpecVersion", "1.0", "xsd:string"),
        ("Device.DeviceInfo.HardwareVersion", "HW-1.2", "xsd:string"),
        ("Device.DeviceInfo.SoftwareVersion", "3.4.5-build.678", "xsd:string"),
        ("Device.DeviceInfo.ProvisioningCode", "", "xsd:string"),
        ("Device.DeviceInfo.UpTime", "86400", "xsd:unsignedInt"),
        ("Device.ManagementServer.ParameterKey", "pk-17", "xsd:string"),
        ("Device.ManagementServer.ConnectionRequestURL", "http://10.1.2.3:7547/cr/abcdef", "xsd:string"),
        ("Device.ManagementServer.AliasBasedAddressing", "false", "xsd:boolean"),
        ("Device.IP.Interface.1.IPv4Address.1.IPAddress", "10.1.2.3", "xsd:string"),
        ("Device.DeviceInfo.FirstUseDate", "2026-01-01T00:00:00Z", "xsd:dateTime"),
    ]
    inform = Inform(
        DeviceId("ACME Networks", "00D09E", "HomeGateway", "SN0123456789"),
        (EventStruct("2 PERIODIC", ""),),
        1,
        "2026-11-23T18:34:16+00:00",
        0,
        tuple(ParameterValueStruct(name, ParameterValue(value, kind)) for name, value, kind in params),
    )
    return build_envelope(inform, cwmp_ns=CWMP_NS_1_0, cwmp_id="1234567")


def rate(operation: Callable[[], object], number: int, repeat: int) -> tuple[float, float]:
    """(best, median) operations per second over ``repeat`` runs of ``number`` calls."""
    timings = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            operation()
        timings.append(time.perf_counter() - start)
    return number / min(timings), number / statistics.median(timings)


def bench(label: str, body: bytes, number: int, repeat: int) -> None:
    envelope = parse_envelope(body, "text/xml; charset=utf-8")
    assert isinstance(envelope.message, Inform) and len(envelope.message.parameter_list) == 10
    cwmp_ns, cwmp_id = envelope.cwmp_ns or CWMP_NS_1_0, envelope.header.id

    def parse() -> object:
        return parse_envelope(body, "text/xml; charset=utf-8")

    def build() -> bytes:
        return build_envelope(InformResponse(), cwmp_ns=cwmp_ns, cwmp_id=cwmp_id)

    def both() -> bytes:
        parsed = parse_envelope(body, "text/xml; charset=utf-8")
        return build_envelope(InformResponse(), cwmp_ns=parsed.cwmp_ns or CWMP_NS_1_0, cwmp_id=parsed.header.id)

    print(f"{label} ({len(body)} bytes)")
    for name, operation, count in (("parse + build", both, number), ("parse only", parse, number),
                                   ("build only", build, number * 10)):  # fmt: skip
        best, median = rate(operation, count, repeat)
        print(f"  {name:14s} {best:10,.0f} /s  (median {median:,.0f} /s, {1e6 / best:6.1f} us each)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--number", type=int, default=5000, help="calls per run")
    parser.add_argument("--repeat", type=int, default=7, help="runs; the best one is reported")
    args = parser.parse_args()
    print(f"Python {sys.version.split()[0]}, one thread")
    bench("compact 10-parameter Inform", compact_inform(), args.number, args.repeat)
    if EASYCWMP_INFORM.is_file():
        bench("easycwmp pretty-printed 10-parameter Inform", EASYCWMP_INFORM.read_bytes(), args.number, args.repeat)


if __name__ == "__main__":
    main()
