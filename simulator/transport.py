"""HTTP for the simulated CPEs: the CWMP session channel and the file transfers.

:class:`AcsChannel` carries one session over a :class:`simulator.http11.Connection`: it sends
each POST, answers 401 challenges (Digest or Basic, whichever the ACS offers; the answer goes
out on the same connection unless the ACS closed it), keeps the session's cookies (RFC 6265
subset: name=value, Max-Age=0 deletes) unless told to ignore them like cwmp-sim, follows up to
5 redirects for the rest of the session (T8), and reports transport errors as
:class:`~simulator.session.SessionFailed`. With ``reuse_nc`` it plays a sloppy Digest client
that re-sends its first answer to a challenge (``nc=00000001``) on every later request.

File transfers (F1-F6) use httpx (streaming, redirects; they are rare, so its cost does not
matter) with a short-lived client each, as a CPE opens a new connection to the
file server: :func:`download` streams the body (never held in memory), counts and hashes it,
and maps failures to TransferComplete fault codes: 9010 transfer failure, 9012 file-server
authentication failure, 9018 corrupted (size differs from FileSize). :func:`upload` PUTs.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import ssl
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Protocol
from urllib.parse import unquote, urljoin, urlsplit

import httpx

from cwmp.digest import DigestClient, DigestError, basic_authorization
from cwmp.faults import CpeFault

from .config import AuthMode
from .http11 import Connection, HttpError, Origin, Response, origin_of
from .session import Outgoing, SessionFailed

__all__ = [
    "AcsChannel",
    "Reply",
    "Requester",
    "TransferOutcome",
    "credentials_through_url",
    "download",
    "ssl_context",
    "upload",
    "version_from_name",
]

try:
    import sniffio  # noqa: F401
except ImportError:
    # httpcore runs `import sniffio` on every request (3-4 times) and anyio 4 no longer
    # installs it. A failed import is not cached, so each one searches sys.path again
    # (~0.15 ms): a third of the simulator's CPU per session. A None entry makes the import
    # fail at once; httpcore and anyio then assume asyncio, which is what runs here.
    sys.modules.setdefault("sniffio", None)  # type: ignore[arg-type]

_MAX_REDIRECTS = 5
_QOP = re.compile(r',?\s*qop=("[^"]*"|[^,\s]*)', re.IGNORECASE)  # a challenge's qop, for RFC 2069 clients
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_VERSION_RE = re.compile(r"\d+(?:\.\d+)+[A-Za-z0-9.\-]*")


_SSL_CONTEXT: ssl.SSLContext | None = None


def ssl_context() -> ssl.SSLContext:
    # Building a default SSL context loads the CA bundle (~20 ms, ~1 MB): do it once per process.
    global _SSL_CONTEXT
    if _SSL_CONTEXT is None:
        _SSL_CONTEXT = ssl.create_default_context()
    return _SSL_CONTEXT


class Requester(Protocol):
    """What the channel needs from a connection (:class:`simulator.http11.Connection`)."""

    origin: Origin

    async def request(self, method: str, target: str, headers: list[tuple[str, str]], body: bytes,
                      answer_within: float) -> Response: ...

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    content_type: str | None
    body: bytes


def _retry_after(response: Response) -> float | None:
    value = response.header("retry-after")
    if value is None or not value.strip().isdigit():
        return None
    return min(float(value.strip()), 3600.0)


class AcsChannel:
    """The HTTP side of one CWMP session. See the module docstring."""

    def __init__(self, connection: Requester, url: str, *, auth: AuthMode, username: str, password: str,
                 ignore_cookies: bool = False, timeout: float = 30.0, user_agent: str = "acs-simulator",
                 reuse_nc: bool = False, reused: tuple[str, str] | None = None,
                 cookies: dict[str, str] | None = None, digest: DigestClient | None = None,
                 digest_without_qop: bool = False) -> None:
        self.connection = connection
        self.url = url
        self.auth = auth
        self.username = username
        self.password = password
        self.ignore_cookies = ignore_cookies
        self.timeout = timeout
        self.user_agent = user_agent
        self.cookies: dict[str, str] = dict(cookies or {})
        self.requests = 0
        # Set once the ACS has challenged; given, the previous session's client (digest_keep_nonce),
        # whose nonce and count the first request then carries.
        self._digest: DigestClient | None = digest
        if digest is not None:
            # A CPE keeps the server's nonce but signs with the credentials it has now: after a
            # bootstrap set its own pair, those are not the ones it answered the challenge with.
            digest.username, digest.password = username, password
        # reuse_nc: (request target, Authorization) answered once and sent again as it is;
        # ``reused`` carries it over from the device's previous session.
        self.reuse_nc = reuse_nc
        self.reused = reused if reuse_nc else None
        self.digest_without_qop = digest_without_qop
        self._redirects = 0
        self._own: list[Requester] = []  # connections opened for redirects to other origins

    @property
    def digest(self) -> DigestClient | None:
        """The Digest client with the last challenge answered (kept for the next session)."""
        return self._digest

    async def aclose(self) -> None:
        for connection in self._own:
            await connection.close()
        self._own.clear()

    def _authorization(self, target: str) -> str | None:
        if self.auth is AuthMode.BASIC:
            return basic_authorization(self.username, self.password)
        if self.reused is not None and self.reused[0] == target:
            return self.reused[1]  # the sloppy client: same nonce, same cnonce, nc=00000001
        if self._digest is not None and self._digest.challenge is not None:
            # After a challenge, every request carries credentials (A1); nc increments.
            return self._digest.authorization("POST", target)
        return None

    def _store_cookies(self, values: Iterable[str]) -> None:
        for header in values:
            pair, _, attributes = header.partition(";")
            name, sep, value = pair.partition("=")
            name = name.strip()
            if not sep or not name:
                continue
            value = value.strip().strip('"')
            if re.search(r"(?i)(^|;)\s*max-age\s*=\s*0\s*(;|$)", attributes):
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = value

    async def exchange(self, out: Outgoing) -> Reply:
        """POST ``out`` and return the ACS's final reply (after auth legs and redirects)."""
        answered: str | None = None  # the Authorization that answers a fresh challenge
        while True:
            try:
                origin, target = origin_of(self.url)
            except HttpError as exc:
                raise SessionFailed(f"bad ACS URL: {exc}") from None
            headers: list[tuple[str, str]] = []
            if out.body:
                headers.append(("Content-Type", 'text/xml; charset="utf-8"'))
                # T3: responses and faults carry an empty SOAPAction; requests may name nothing too.
                headers.append(("SOAPAction", ""))
            if self.cookies and not self.ignore_cookies:
                headers.append(("Cookie", "; ".join(f"{k}={v}" for k, v in self.cookies.items())))
            try:
                authorization = answered or self._authorization(target)
            except DigestError as exc:
                raise SessionFailed(f"auth: {exc}") from None
            if authorization is not None:
                headers.append(("Authorization", authorization))
            connection = self._connection_for(origin)
            try:
                response = await connection.request("POST", target, headers, out.body, self.timeout)
            except HttpError as exc:
                reason = str(exc)
                raise SessionFailed(reason if reason.startswith("timeout") else f"connection error: {reason}") from None
            self.requests += 1
            if not self.ignore_cookies:
                self._store_cookies(response.header_list("set-cookie"))
                self._store_cookies(response.header_list("set-cookie2"))
            status = response.status
            if status == 401:
                answered = self._answer_challenge(response, answered is not None, target)
                continue
            answered = None
            location = response.header("location")
            if status in _REDIRECTS and location:
                self._redirects += 1
                if self._redirects > _MAX_REDIRECTS:
                    raise SessionFailed(f"redirect: more than {_MAX_REDIRECTS} redirects")
                # The new URL holds for the rest of this session only (T8).
                self.url = urljoin(self.url, location)
                continue
            if status >= 300 and status != 204:
                raise SessionFailed(f"HTTP {status}", _retry_after(response))
            return Reply(status, response.header("content-type"), response.body)

    def _connection_for(self, origin: Origin) -> Requester:
        if origin == self.connection.origin:
            return self.connection
        for connection in self._own:
            if connection.origin == origin:
                return connection
        connection = Connection(origin, user_agent=self.user_agent, ssl_context=ssl_context())
        self._own.append(connection)
        return connection

    def _answer_challenge(self, response: Response, already_answered: bool, target: str) -> str:
        """The Authorization answering this 401, or SessionFailed when there is no point."""
        if self.auth is AuthMode.NONE:
            raise SessionFailed("auth: HTTP 401 and no credentials configured")
        challenges = response.header_list("www-authenticate")
        if not challenges:
            raise SessionFailed("auth: HTTP 401 without WWW-Authenticate")
        # stale=true: right credentials, expired nonce; answering again is expected.
        stale = any("stale=true" in c.replace(" ", "").lower() for c in challenges)
        if already_answered and not stale:
            raise SessionFailed("auth: credentials refused (HTTP 401 after answering the challenge)")
        if self.auth is AuthMode.BASIC and not any(c.lstrip().lower().startswith("digest") for c in challenges):
            raise SessionFailed("auth: Basic credentials refused")
        if self._digest is None:
            self._digest = DigestClient(self.username, self.password, allow_basic=True)
        if self.digest_without_qop:
            # An RFC 2069 client reads no qop in the challenge: no qop, nc or cnonce in its answer.
            challenges = [_QOP.sub("", c) for c in challenges]
        try:
            value = self._digest.authorization("POST", target, challenges)
        except DigestError as exc:
            raise SessionFailed(f"auth: {exc}") from None
        # A Digest challenge to a pre-emptive Basic CPE: from now on answer it like Digest.
        if self.auth is AuthMode.BASIC:
            self.auth = AuthMode.DIGEST
        if self.reuse_nc:
            self.reused = (target, value)
        return value


# --------------------------------------------------------------------------------------------
# File transfers
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TransferOutcome:
    code: int  # 0 on success, else the TransferComplete FaultCode
    message: str = ""
    size: int = 0
    sha256: str = ""
    version: str | None = None  # what the downloaded file says its version is, if anything


def version_from_name(name: str) -> str | None:
    """``fw-2.1.0.bin`` -> ``2.1.0``; ``router_v3.4.5-beta.img`` -> ``3.4.5-beta``; else None."""
    stem = PurePosixPath(unquote(name)).name
    for suffix in (".bin", ".img", ".tar", ".gz", ".tgz", ".zip", ".fw", ".trx", ".chk"):
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
    match = _VERSION_RE.search(stem)
    return match.group(0).rstrip(".-") if match else None


async def _authed(client: httpx.AsyncClient, method: str, url: str, username: str, password: str,
                  content: bytes | None = None, *, stream: bool = False) -> httpx.Response:
    """One request with at most one challenge answered. The caller closes a streamed response."""
    digest = DigestClient(username, password, allow_basic=True)
    headers: dict[str, str] = {}
    for attempt in range(2):
        request = client.build_request(method, url, content=content, headers=headers)
        response = await client.send(request, stream=stream)
        if response.status_code != 401 or attempt == 1 or not (username or password):
            return response
        challenges = response.headers.get_list("www-authenticate")
        await response.aclose()
        try:
            headers = {"Authorization": digest.authorization(method, origin_of(str(response.url))[1],
                                                             challenges)}
        except DigestError:
            return response
    raise AssertionError("unreachable")


def credentials_through_url(url: str, username: str, password: str) -> tuple[str, str, str]:
    """``(url, username, password)`` as an agent that hands ``http://user:pass@host/...`` to wget
    or curl ends up using them: pasted into the URL as they are, then percent-decoded by the tool.
    Credentials with ``%`` (or anything outside RFC 3986's unreserved set) do not survive this."""
    if not (username or password):
        return url, username, password
    parts = urlsplit(url)
    pasted = parts._replace(netloc=f"{username}:{password}@{parts.netloc}").geturl()
    # What the tool reads back out of the URL (curl and wget percent-decode the userinfo).
    userinfo = urlsplit(pasted).netloc.rpartition("@")[0]
    user, _, secret = userinfo.partition(":")
    return url, unquote(user), unquote(secret)


async def download(url: str, username: str, password: str, file_size: int, target_file_name: str,
                   *, io_timeout: float, user_agent: str, slow_seconds: float = 0.0) -> TransferOutcome:
    """Fetch ``url`` and check it; the body is streamed and only counted and hashed.

    ``slow_seconds``: read the body slowly, that long in all (spread by the announced size), as a
    CPE on a thin line does; the file server sees the download last that long.
    """
    async with httpx.AsyncClient(timeout=httpx.Timeout(io_timeout), follow_redirects=True,
                                 verify=ssl_context(), headers={"User-Agent": user_agent}) as client:
        try:
            response = await _authed(client, "GET", url, username, password, stream=True)
            try:
                if response.status_code == 401:
                    return TransferOutcome(CpeFault.FILE_SERVER_AUTHENTICATION_FAILURE,
                                           "file server refused the credentials (HTTP 401)")
                if response.status_code >= 400:
                    return TransferOutcome(CpeFault.FILE_TRANSFER_FAILURE,
                                           f"file server answered HTTP {response.status_code}")
                digest = hashlib.sha256()
                size = 0
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    digest.update(chunk)
                    if slow_seconds > 0:
                        await asyncio.sleep(slow_seconds * len(chunk) / max(file_size, size, 1))
                header_version = response.headers.get("x-file-version")
            finally:
                await response.aclose()
        except httpx.TimeoutException:
            return TransferOutcome(CpeFault.FILE_TRANSFER_FAILURE, "file server timed out")
        except httpx.HTTPError as exc:
            return TransferOutcome(CpeFault.FILE_TRANSFER_FAILURE, f"download failed: {type(exc).__name__}")
    if file_size and size != file_size:
        return TransferOutcome(CpeFault.FILE_CORRUPTED,
                               f"file is {size} bytes, FileSize announced {file_size}", size)
    if size == 0:
        return TransferOutcome(CpeFault.FILE_CORRUPTED, "empty file", 0)
    version = (header_version or version_from_name(target_file_name)
               or version_from_name(urlsplit(url).path))
    return TransferOutcome(0, "", size, digest.hexdigest(), version)


async def upload(url: str, username: str, password: str, body: bytes, *, io_timeout: float,
                 user_agent: str) -> TransferOutcome:
    """PUT ``body`` to ``url`` (F3: uploads use HTTP PUT)."""
    async with httpx.AsyncClient(timeout=httpx.Timeout(io_timeout), follow_redirects=False,
                                 verify=ssl_context(), headers={"User-Agent": user_agent}) as client:
        try:
            response = await _authed(client, "PUT", url, username, password, body)
        except httpx.TimeoutException:
            return TransferOutcome(CpeFault.UPLOAD_FAILURE, "upload server timed out")
        except httpx.HTTPError as exc:
            return TransferOutcome(CpeFault.UPLOAD_FAILURE, f"upload failed: {type(exc).__name__}")
    if response.status_code == 401:
        return TransferOutcome(CpeFault.FILE_SERVER_AUTHENTICATION_FAILURE,
                               "upload server refused the credentials (HTTP 401)")
    if response.status_code >= 300:
        return TransferOutcome(CpeFault.UPLOAD_FAILURE, f"upload server answered HTTP {response.status_code}")
    return TransferOutcome(0, "", len(body), hashlib.sha256(body).hexdigest())
