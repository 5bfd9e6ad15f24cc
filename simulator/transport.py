"""HTTP for the simulated CPEs: the CWMP session channel and the file transfers (httpx).

:class:`AcsChannel` carries one session: it sends each POST, answers 401 challenges (Digest or
Basic, whichever the ACS offers; the answer goes out on the same connection unless the ACS
closed it), keeps the session's cookies (RFC 6265 subset: name=value, Max-Age=0 deletes) unless
told to ignore them like cwmp-sim, follows up to 5 redirects for the rest of the session (T8),
and reports transport errors as :class:`~simulator.session.SessionFailed`.

httpx's own cookie jar is disabled (:class:`_NoCookies`): with a client shared by many devices
it would mix their sessions, and ignoring cookies must be possible.

File transfers (F1-F6) use their own short-lived client, as a CPE opens a new connection to the
file server: :func:`download` streams the body (never held in memory), counts and hashes it,
and maps failures to TransferComplete fault codes: 9010 transfer failure, 9012 file-server
authentication failure, 9018 corrupted (size differs from FileSize). :func:`upload` PUTs.
"""

from __future__ import annotations

import hashlib
import re
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from http.cookiejar import CookieJar, CookiePolicy
from pathlib import PurePosixPath
from urllib.parse import unquote, urljoin, urlsplit

import httpx

from cwmp.digest import DigestClient, DigestError, basic_authorization
from cwmp.faults import CpeFault

from .config import AuthMode
from .session import Outgoing, SessionFailed

__all__ = [
    "AcsChannel",
    "Reply",
    "TransferOutcome",
    "download",
    "make_client",
    "upload",
    "version_from_name",
]

_MAX_REDIRECTS = 5
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_VERSION_RE = re.compile(r"\d+(?:\.\d+)+[A-Za-z0-9.\-]*")


class _NoCookies(CookiePolicy):
    """Refuse every cookie: cookies are handled per session by :class:`AcsChannel`."""

    netscape = True
    rfc2965 = False
    hide_cookie2 = True

    def set_ok(self, cookie, request) -> bool:  # type: ignore[no-untyped-def]
        return False

    def return_ok(self, cookie, request) -> bool:  # type: ignore[no-untyped-def]
        return False

    def domain_return_ok(self, domain, request) -> bool:  # type: ignore[no-untyped-def]
        return False

    def path_return_ok(self, path, request) -> bool:  # type: ignore[no-untyped-def]
        return False


_SSL_CONTEXT: ssl.SSLContext | None = None


def _ssl_context() -> ssl.SSLContext:
    # Building a default SSL context loads the CA bundle (~20 ms, ~1 MB): do it once per process.
    global _SSL_CONTEXT
    if _SSL_CONTEXT is None:
        _SSL_CONTEXT = ssl.create_default_context()
    return _SSL_CONTEXT


def make_client(timeout: float, *, max_connections: int = 1, user_agent: str = "acs-simulator") -> httpx.AsyncClient:
    """An httpx client with no cookie jar, no automatic redirects and a shared SSL context."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(timeout),
        limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
        cookies=CookieJar(policy=_NoCookies()),
        follow_redirects=False,
        verify=_ssl_context(),
        headers={"User-Agent": user_agent},
    )


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    content_type: str | None
    body: bytes


def _request_target(url: str) -> str:
    parts = urlsplit(url)
    return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if value is None or not value.strip().isdigit():
        return None
    return min(float(value.strip()), 3600.0)


class AcsChannel:
    """The HTTP side of one CWMP session. See the module docstring."""

    def __init__(self, client: httpx.AsyncClient, url: str, *, auth: AuthMode, username: str,
                 password: str, ignore_cookies: bool = False) -> None:
        self.client = client
        self.url = url
        self.auth = auth
        self.username = username
        self.password = password
        self.ignore_cookies = ignore_cookies
        self.cookies: dict[str, str] = {}
        self.requests = 0
        self._digest: DigestClient | None = None  # set once the ACS has challenged
        self._redirects = 0

    def _authorization(self) -> str | None:
        if self.auth is AuthMode.BASIC:
            return basic_authorization(self.username, self.password)
        if self._digest is not None and self._digest.challenge is not None:
            # After a challenge, every request carries credentials (A1); nc increments.
            return self._digest.authorization("POST", _request_target(self.url))
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
            headers: dict[str, str] = {}
            if out.body:
                headers["Content-Type"] = 'text/xml; charset="utf-8"'
                # T3: responses and faults carry an empty SOAPAction; requests may name nothing too.
                headers["SOAPAction"] = ""
            if self.cookies and not self.ignore_cookies:
                headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
            try:
                authorization = answered or self._authorization()
            except DigestError as exc:
                raise SessionFailed(f"auth: {exc}") from None
            if authorization is not None:
                headers["Authorization"] = authorization
            try:
                response = await self.client.post(self.url, content=out.body, headers=headers)
            except httpx.TimeoutException:
                raise SessionFailed("timeout: no answer from the ACS") from None
            except httpx.HTTPError as exc:
                raise SessionFailed(f"connection error: {type(exc).__name__} {exc}".rstrip()) from None
            self.requests += 1
            if not self.ignore_cookies:
                self._store_cookies(response.headers.get_list("set-cookie"))
                self._store_cookies(response.headers.get_list("set-cookie2"))
            status = response.status_code
            if status == 401:
                answered = self._answer_challenge(response, answered is not None)
                continue
            answered = None
            if status in _REDIRECTS and "location" in response.headers:
                self._redirects += 1
                if self._redirects > _MAX_REDIRECTS:
                    raise SessionFailed(f"redirect: more than {_MAX_REDIRECTS} redirects")
                # The new URL holds for the rest of this session only (T8).
                self.url = urljoin(self.url, response.headers["location"])
                continue
            if status >= 300 and status != 204:
                raise SessionFailed(f"HTTP {status}", _retry_after(response))
            return Reply(status, response.headers.get("content-type"), response.content)

    def _answer_challenge(self, response: httpx.Response, already_answered: bool) -> str:
        """The Authorization answering this 401, or SessionFailed when there is no point."""
        if self.auth is AuthMode.NONE:
            raise SessionFailed("auth: HTTP 401 and no credentials configured")
        challenges = response.headers.get_list("www-authenticate")
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
        try:
            value = self._digest.authorization("POST", _request_target(self.url), challenges)
        except DigestError as exc:
            raise SessionFailed(f"auth: {exc}") from None
        # A Digest challenge to a pre-emptive Basic CPE: from now on answer it like Digest.
        if self.auth is AuthMode.BASIC:
            self.auth = AuthMode.DIGEST
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
            headers = {"Authorization": digest.authorization(method, _request_target(str(response.url)),
                                                             challenges)}
        except DigestError:
            return response
    raise AssertionError("unreachable")


async def download(url: str, username: str, password: str, file_size: int, target_file_name: str,
                   *, io_timeout: float, user_agent: str) -> TransferOutcome:
    """Fetch ``url`` and check it; the body is streamed and only counted and hashed."""
    async with httpx.AsyncClient(timeout=httpx.Timeout(io_timeout), follow_redirects=True,
                                 verify=_ssl_context(), headers={"User-Agent": user_agent}) as client:
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
                                 verify=_ssl_context(), headers={"User-Agent": user_agent}) as client:
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
