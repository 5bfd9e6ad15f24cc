"""Start-up checks that turn a bad configuration into one line an operator can act on.

A service that cannot reach its database at start would otherwise die deep inside a driver with
a traceback. These checks wait a bounded time (dependencies may still be starting, as under
docker-compose) and then raise ``ConfigError`` naming the setting to fix.
"""

from __future__ import annotations

import asyncio
import time

from services.common.settings import Settings


class ConfigError(RuntimeError):
    """The configuration cannot work; the message is one line."""


async def _retry(check, deadline: float) -> str | None:  # type: ignore[no-untyped-def]
    """Run ``check`` until it returns None (fine) or the deadline passes; return the last error."""
    error: str | None = "not checked"
    while True:
        error = await check()
        if error is None or time.monotonic() >= deadline:
            return error
        await asyncio.sleep(0.5)


async def check_mongodb(settings: Settings, within: float) -> None:
    from pymongo import AsyncMongoClient
    from pymongo.errors import ConfigurationError, OperationFailure, PyMongoError

    try:
        client: AsyncMongoClient = AsyncMongoClient(settings.mongodb_url, serverSelectionTimeoutMS=2000)
    except (ConfigurationError, ValueError) as exc:
        raise ConfigError(f"ACS_MONGODB_URL is not a valid MongoDB URL: {exc}") from None

    async def ping() -> str | None:
        try:
            await client.admin.command("ping")
            return None
        except OperationFailure as exc:
            return f"MongoDB refused us: {exc.details.get('errmsg') if exc.details else exc}"
        except PyMongoError as exc:
            return f"cannot reach MongoDB ({type(exc).__name__})"

    try:
        error = await _retry(ping, time.monotonic() + within)
    finally:
        await client.close()
    if error:
        raise ConfigError(f"{error}; check ACS_MONGODB_URL ({_redact(settings.mongodb_url)})")


async def check_kafka(settings: Settings, within: float) -> None:
    from services.bus.kafka import kafka_reachable

    async def probe() -> str | None:
        return None if await kafka_reachable(settings) else "no answer"

    if await _retry(probe, time.monotonic() + within):
        raise ConfigError(f"cannot reach Kafka at {settings.kafka_bootstrap}; check ACS_KAFKA_BOOTSTRAP")


async def check_s3(settings: Settings, within: float) -> None:
    from minio import Minio
    from minio.error import S3Error

    client = Minio(settings.s3_endpoint, access_key=settings.s3_access_key,
                   secret_key=settings.s3_secret_key, secure=settings.s3_secure,
                   region=settings.s3_region)

    def probe_sync() -> str | None:
        try:
            client.bucket_exists(settings.s3_bucket)
            return None
        except S3Error as exc:
            if exc.code in {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied"}:
                raise ConfigError(f"S3 at {settings.s3_endpoint} rejected the credentials ({exc.code}); "
                                  "check ACS_S3_ACCESS_KEY and ACS_S3_SECRET_KEY") from None
            return f"S3 error {exc.code}"
        except Exception as exc:  # noqa: BLE001 - urllib3 raises many kinds for a dead endpoint
            return f"cannot reach S3 ({type(exc).__name__})"

    async def probe() -> str | None:
        return await asyncio.to_thread(probe_sync)

    error = await _retry(probe, time.monotonic() + within)
    if error:
        raise ConfigError(f"{error} at {settings.s3_endpoint}; check ACS_S3_ENDPOINT")


def check_port_free(host: str, port: int, setting: str) -> None:
    import socket

    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            raise ConfigError(f"port {host}:{port} is already in use; free it or change {setting}") from None


def _redact(url: str) -> str:
    """The URL without its password, for messages."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    credentials, host = rest.rsplit("@", 1)
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}"
