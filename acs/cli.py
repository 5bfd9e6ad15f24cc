"""The `acs` command line: `acs up` for everything on one machine, one sub-command per service.

Errors an operator can fix (bad settings, unreachable servers, ports in use, missing binaries)
end the command with one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import sys
from collections.abc import Sequence

SERVICES = ("gateway", "orchestrator", "inventory", "fileserver", "console", "router")


def _settings():  # type: ignore[no-untyped-def]
    from pydantic import ValidationError

    from services.common.preflight import ConfigError
    from services.common.settings import Settings

    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(f"ACS_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"invalid settings: {problems}") from None


def run_service(name: str) -> None:
    from services.common import redaction
    from services.common.logs import configure_logging

    settings = _settings()
    configure_logging(name, settings.log_level)
    redaction.configure_from(settings)  # ACS_REDACTED_PARAMETERS, for every answer, event and log line
    module = importlib.import_module(f"services.{name}.main")
    try:
        import uvloop  # the faster event loop, part of uvicorn[standard]
    except ImportError:  # pragma: no cover - optional at run time
        asyncio.run(module.run(settings))
    else:
        uvloop.run(module.run(settings))


def main(argv: Sequence[str] | None = None) -> int:
    from acs.infra import InfraError
    from services.common.preflight import ConfigError

    parser = argparse.ArgumentParser(prog="acs", description="TR-069 Auto-Configuration Server")
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="start Kafka, MongoDB, S3 and every service on this machine")
    up.add_argument("--data-dir", default=".acs", help="where local servers keep data and logs")
    up.add_argument("--external", action="store_true",
                    help="use the servers in ACS_KAFKA_BOOTSTRAP/ACS_MONGODB_URL/ACS_S3_ENDPOINT")
    for name in SERVICES:
        commands.add_parser(name, help=f"run the {name} service")
    commands.add_parser("asyncapi", help="print the AsyncAPI document of the event topics")
    topics = commands.add_parser("topics", help="create the Kafka topics with the configured partitions")
    topics.add_argument("--ensure", action="store_true", help="create missing topics (the default)")
    commands.add_parser("sim", help="run a simulated CPE fleet against an ACS (see acs sim --help)",
                        add_help=False)
    commands.add_parser("bench", help="load benchmark: the ACS under a simulated fleet vs a trivial responder",
                        add_help=False)
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:
        from acs.bench import main as bench_main

        return bench_main(argv[1:])
    if argv[:1] == ["sim"]:
        # The simulator owns its options; it also runs on its own, against any ACS.
        from simulator.cli import main as sim_main

        return sim_main(argv[1:])
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            from acs.up import run_up

            return run_up(data_dir=args.data_dir, external=args.external)
        if args.command == "asyncapi":
            from services.bus.asyncapi import render

            print(render(), end="")
            return 0
        if args.command == "topics":
            from services.bus.kafka import ensure_topics, topic_layout

            settings = _settings()
            created = asyncio.run(ensure_topics(settings))
            print("created: " + (", ".join(created) if created else "nothing, all topics exist"))
            # An existing topic is never repartitioned here; one with another layout is named.
            layout = asyncio.run(topic_layout(settings))
            other = {t: n for t, n in layout.items() if n != settings.kafka_partitions}
            for topic, partitions in other.items():
                print(f"warning: {topic} has {partitions} partitions, not ACS_KAFKA_PARTITIONS="
                      f"{settings.kafka_partitions}", file=sys.stderr)
            return 0
        if args.command in SERVICES:
            run_service(args.command)
            return 0
        parser.error(f"unknown command {args.command}")
    except (ConfigError, InfraError) as exc:
        print(f"acs {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
