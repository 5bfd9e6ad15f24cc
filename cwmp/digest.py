"""HTTP Digest (RFC 2617 / RFC 7616) and Basic authentication, both sides, no I/O.

Server side (the gateway authenticating CPEs, the file server authenticating downloads):
:class:`DigestServer` issues challenges and verifies ``Authorization`` headers. It keeps no
per-challenge state: a nonce carries its own issue time and an HMAC over it, so any gateway
instance that shares the secret can check a nonce another instance issued (the CPE's next
request may land on a different instance behind the load balancer). Nonce-count replay
protection goes through a small pluggable :class:`NonceCountStore`.

Client side (the ACS sending connection requests to CPEs, the CPE simulator talking to the ACS
and the file server): :class:`DigestClient` answers a ``WWW-Authenticate`` challenge, including
RFC 2069 challenges without ``qop`` that some CPEs still send (genieacs#181).

Everything here is tolerant of what real CPEs send (unquoted ``qop=auth`` from easycwmp, missing
spaces after commas, commas inside quoted strings) but never lets a malformed header escape as an
exception from :meth:`DigestServer.verify`: the result carries a reason instead.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
import struct
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol
from urllib.parse import unquote, unquote_to_bytes, urlsplit

__all__ = [
    "ALGORITHMS",
    "AuthHeaderError",
    "Challenge",
    "DigestClient",
    "DigestCredentials",
    "DigestError",
    "DigestResult",
    "DigestServer",
    "HmacNonceIssuer",
    "MemoryNonceCountStore",
    "NonceCheck",
    "NonceCountStore",
    "NonceIssuer",
    "NonceStatus",
    "basic_authorization",
    "basic_challenge",
    "canonical_algorithm",
    "compute_ha1",
    "compute_response",
    "parse_authorization",
    "parse_basic",
    "parse_challenge",
    "parse_challenges",
]


class DigestError(ValueError):
    """A challenge or credentials cannot be used (client side), or a header is malformed."""


class AuthHeaderError(DigestError):
    """An ``Authorization`` or ``WWW-Authenticate`` value does not parse."""


# --------------------------------------------------------------------------------------------
# Hashing
# --------------------------------------------------------------------------------------------

# Base algorithm -> hashlib name; "-sess" variants reuse the base hash.
_HASHES: dict[str, str] = {"MD5": "md5", "SHA-256": "sha256"}

#: Algorithm names this module implements, canonical spelling, preference order irrelevant.
ALGORITHMS: tuple[str, ...] = ("MD5", "MD5-sess", "SHA-256", "SHA-256-sess")
_CANONICAL = {name.upper(): name for name in ALGORITHMS}


def canonical_algorithm(name: str | None) -> str | None:
    """Canonical spelling of a Digest algorithm name, or None when it is not supported.

    An absent algorithm means MD5 (RFC 2617 section 3.2.1); names are case-insensitive.
    """
    if name is None:
        return "MD5"
    return _CANONICAL.get(name.strip().upper())


def _split_algorithm(algorithm: str) -> tuple[str, bool]:
    canonical = canonical_algorithm(algorithm)
    if canonical is None:
        raise DigestError(f"unsupported digest algorithm {algorithm!r}")
    if canonical.endswith("-sess"):
        return canonical[: -len("-sess")], True
    return canonical, False


def _hex(base: str, data: str | bytes) -> str:
    if isinstance(data, str):
        # RFC 7616 hashes UTF-8; for the ASCII credentials CPEs use this is the same as RFC 2617.
        data = data.encode("utf-8")
    return hashlib.new(_HASHES[base], data).hexdigest()


def compute_ha1(algorithm: str, username: str, realm: str, password: str) -> str:
    """``H(username:realm:password)`` with the hash of ``algorithm`` (the ``-sess`` step excluded).

    This is the value to store instead of a clear-text password: :class:`DigestServer` accepts it
    through ``lookup_ha1``. It depends on the realm, so changing the realm invalidates it.
    """
    base, _ = _split_algorithm(algorithm)
    return _hex(base, f"{username}:{realm}:{password}")


def compute_response(
    algorithm: str,
    ha1: str,
    nonce: str,
    method: str,
    uri: str,
    *,
    qop: str | None = None,
    nc: str | None = None,
    cnonce: str | None = None,
    body: bytes = b"",
) -> str:
    """The ``response`` directive (RFC 7616 section 3.4.1, RFC 2069 when ``qop`` is None).

    ``ha1`` is the plain ``H(username:realm:password)``; the ``-sess`` transformation is applied
    here because it needs the nonce and cnonce of the request.
    """
    base, sess = _split_algorithm(algorithm)
    ha1 = ha1.lower()
    if sess:
        if cnonce is None:
            raise DigestError(f"{algorithm} needs a cnonce")
        ha1 = _hex(base, f"{ha1}:{nonce}:{cnonce}")
    if qop is not None and qop.lower() == "auth-int":
        ha2 = _hex(base, f"{method}:{uri}:{_hex(base, body)}")
    else:
        ha2 = _hex(base, f"{method}:{uri}")
    if qop is None:
        return _hex(base, f"{ha1}:{nonce}:{ha2}")
    if nc is None or cnonce is None:
        raise DigestError("qop needs nc and cnonce")
    return _hex(base, f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")


# --------------------------------------------------------------------------------------------
# Header parsing (shared by both sides)
# --------------------------------------------------------------------------------------------

# Deliberately wider than RFC 7230 tchar: anything up to a separator counts as a token, so that
# odd but harmless characters in parameter names do not make the whole header unusable.
_TOKEN_RE = re.compile(r'[^\s=,"]+')
_TOKEN68_RE = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
_BARE_VALUE_RE = re.compile(r"[^\s,]*")
_WS = " \t\r\n"


@dataclass(frozen=True, slots=True)
class _RawAuth:
    scheme: str
    params: tuple[tuple[str, str], ...]
    token68: str | None


def _skip(text: str, pos: int, chars: str) -> int:
    while pos < len(text) and text[pos] in chars:
        pos += 1
    return pos


def _read_quoted(text: str, pos: int) -> tuple[str, int]:
    """Read a quoted-string starting at ``text[pos] == '"'``; return (value, position after)."""
    out: list[str] = []
    i = pos + 1
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            out.append(text[i + 1])
            i += 2
            continue
        if ch == '"':
            return "".join(out), i + 1
        out.append(ch)
        i += 1
    raise AuthHeaderError(f"unterminated quoted string starting at offset {pos}")


# Fast path for the header on every authenticated request: one Digest scheme followed by
# comma-separated ``name=value`` pairs, as CPEs and our own client and server write it. A name
# and whitespace are exactly what the strict parser takes them to be (_TOKEN_RE, _WS), a bare
# value at most what it takes, so whatever the fast path fully matches, the strict parser reads
# the same way (a randomised test compares the two). Anything else (other schemes, several
# challenges, missing commas, a quote inside a bare value, stray characters, unterminated strings)
# is left to the strict parser, which also produces the error messages.
_FAST_PARAM = (
    r'([^\s=,"]+)[ \t\r\n]*=[ \t\r\n]*'  # name, "=", optional whitespace around it
    r'(?:"([^"\\]*(?:\\[\s\S][^"\\]*)*)"'  # a quoted-string: any character may be escaped
    r'|([^\s,"]*))'  # or a bare value, possibly empty; one with a quote is left to the strict path
)
_FAST_PARAM_RE = re.compile(_FAST_PARAM)
_FAST_DIGEST_RE = re.compile(
    # ASCII-only case folding: Unicode folding would take "Dige\u017ft" (long s) for Digest, a
    # scheme the strict parser keeps apart (it may read a token68 for it).
    r"[ \t\r\n,]*((?ai:digest))[ \t\r\n]+"
    rf"{_FAST_PARAM}(?:[ \t\r\n]*,[ \t\r\n,]*{_FAST_PARAM})*"
    r"[ \t\r\n,]*"
)
_QUOTED_PAIR_RE = re.compile(r"\\([\s\S])")


def _parse_auth_list(value: str) -> list[_RawAuth]:
    """Split a header value into challenges/credentials: ``scheme [token68 | k=v, ...]``.

    Same result as :func:`_parse_auth_list_strict`, just cheaper for the common shape.
    """
    whole = _FAST_DIGEST_RE.fullmatch(value)
    if whole is None:
        return _parse_auth_list_strict(value)
    params: list[tuple[str, str]] = []
    # The full match vouches that the list is nothing but pairs and separators, and separators
    # cannot start a name, so findall meets exactly the pairs the full match went through.
    for name, quoted, bare in _FAST_PARAM_RE.findall(value, whole.end(1)):
        if "\\" in quoted:
            quoted = _QUOTED_PAIR_RE.sub(r"\1", quoted)
        params.append((name.lower(), quoted or bare))
    return [_RawAuth(whole.group(1), tuple(params), None)]


def _parse_auth_list_strict(value: str) -> list[_RawAuth]:
    """Split a header value into challenges/credentials: ``scheme [token68 | k=v, ...]``.

    A token followed by ``=`` is a parameter of the current scheme; any other token starts a new
    scheme. That also copes with missing commas between parameters, which some CPEs produce.
    """
    result: list[_RawAuth] = []
    scheme: str | None = None
    params: list[tuple[str, str]] = []
    token68: str | None = None
    pos = 0
    n = len(value)
    while True:
        pos = _skip(value, pos, _WS + ",")
        if pos >= n:
            break
        match = _TOKEN_RE.match(value, pos)
        if match is None:
            raise AuthHeaderError(f"unexpected {value[pos]!r} at offset {pos}")
        name = match.group()
        after = _skip(value, match.end(), _WS)
        if after < n and value[after] == "=":
            if scheme is None:
                raise AuthHeaderError("parameter before any authentication scheme")
            pos = _skip(value, after + 1, _WS)
            if pos < n and value[pos] == '"':
                param_value, pos = _read_quoted(value, pos)
            else:
                bare = _BARE_VALUE_RE.match(value, pos)
                assert bare is not None  # the pattern matches the empty string
                param_value, pos = bare.group(), bare.end()
            params.append((name.lower(), param_value))
            continue
        if scheme is not None:
            result.append(_RawAuth(scheme, tuple(params), token68))
        scheme, params, token68 = name, [], None
        pos = after
        # Digest never carries a token68; trying it would misread "opaque=," as one.
        if scheme.lower() != "digest":
            t68 = _TOKEN68_RE.match(value, pos)
            if t68 is not None:
                end = _skip(value, t68.end(), _WS)
                if end >= n or value[end] == ",":
                    token68, pos = t68.group(), end
    if scheme is not None:
        result.append(_RawAuth(scheme, tuple(params), token68))
    return result


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


# --------------------------------------------------------------------------------------------
# Credentials (server side parsing)
# --------------------------------------------------------------------------------------------

_NC_RE = re.compile(r"[0-9A-Fa-f]{1,8}")
_HEX_RE = re.compile(r"[0-9A-Fa-f]+")


@dataclass(frozen=True, slots=True)
class DigestCredentials:
    """A parsed ``Authorization: Digest ...`` header (values unquoted, names lower-cased)."""

    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: str | None = None
    qop: str | None = None
    nc: str | None = None
    cnonce: str | None = None
    opaque: str | None = None
    userhash: bool = False
    params: Mapping[str, str] = field(default_factory=dict)

    @property
    def nc_value(self) -> int | None:
        return int(self.nc, 16) if self.nc is not None else None


def _decode_ext_value(value: str) -> str:
    """RFC 8187 ext-value (``UTF-8''J%C3%A4s%C3%B8n``), used by RFC 7616 for ``username*``."""
    parts = value.split("'", 2)
    if len(parts) != 3:
        raise AuthHeaderError("username* is not an RFC 8187 ext-value")
    charset = parts[0].strip().lower()
    if charset not in ("utf-8", "iso-8859-1"):
        raise AuthHeaderError(f"username* charset {parts[0]!r} not supported")
    try:
        return unquote_to_bytes(parts[2]).decode(charset)
    except UnicodeDecodeError as exc:
        raise AuthHeaderError(f"username* is not valid {charset}") from exc


def parse_authorization(header: str) -> DigestCredentials:
    """Parse a Digest ``Authorization`` value; raise :class:`AuthHeaderError` with a clear reason.

    Syntax only: realm, nonce, uri and response are checked by :meth:`DigestServer.verify`.
    Callers that look passwords up asynchronously parse first (to learn the username), fetch the
    secret, then hand the parsed credentials to ``verify``.
    """
    if len(header) > 8192:
        raise AuthHeaderError("header too long")
    items = _parse_auth_list(header)
    if not items:
        raise AuthHeaderError("empty header")
    if len(items) > 1:
        raise AuthHeaderError("more than one set of credentials")
    item = items[0]
    if item.scheme.lower() != "digest":
        raise AuthHeaderError(f"scheme is {item.scheme!r}, not Digest")
    params: dict[str, str] = {}
    for name, value in item.params:
        if name in params:
            # Two different values for one directive is ambiguous: refuse rather than guess.
            raise AuthHeaderError(f"duplicate parameter {name!r}")
        params[name] = value

    if "username*" in params:
        if "username" in params:
            raise AuthHeaderError("both username and username* present")
        username = _decode_ext_value(params["username*"])
    elif "username" in params:
        username = params["username"]
    else:
        raise AuthHeaderError("missing 'username' parameter")
    for required in ("realm", "nonce", "uri", "response"):
        if required not in params:
            raise AuthHeaderError(f"missing {required!r} parameter")
    if not params["nonce"]:
        raise AuthHeaderError("empty nonce")
    response = params["response"]
    if not _HEX_RE.fullmatch(response):
        raise AuthHeaderError("response is not hexadecimal")

    qop = params.get("qop")
    nc = params.get("nc")
    cnonce = params.get("cnonce")
    if qop is not None:
        if nc is None or cnonce is None:
            raise AuthHeaderError("qop given without nc and cnonce")
        if not _NC_RE.fullmatch(nc):
            raise AuthHeaderError(f"nc {nc!r} is not 1-8 hexadecimal digits")
    elif nc is not None and not _NC_RE.fullmatch(nc):
        raise AuthHeaderError(f"nc {nc!r} is not 1-8 hexadecimal digits")

    return DigestCredentials(
        username=username,
        realm=params["realm"],
        nonce=params["nonce"],
        uri=params["uri"],
        response=response,
        algorithm=params.get("algorithm"),
        qop=qop,
        nc=nc,
        cnonce=cnonce,
        opaque=params.get("opaque"),
        userhash=params.get("userhash", "false").strip().lower() == "true",
        params=params,
    )


# --------------------------------------------------------------------------------------------
# Nonces and nonce counts (server side)
# --------------------------------------------------------------------------------------------


class NonceStatus(Enum):
    VALID = "valid"
    STALE = "stale"  # genuinely ours but expired: answer with stale=true so the CPE just retries
    INVALID = "invalid"


@dataclass(frozen=True, slots=True)
class NonceCheck:
    status: NonceStatus
    detail: str = ""


class NonceIssuer(Protocol):
    """Mints nonces and recognises the ones it minted."""

    def issue(self, now: float) -> str: ...

    def check(self, nonce: str, now: float) -> NonceCheck: ...


_NONCE_VERSION = 1
_NONCE_HEADER = struct.Struct(">BQ")  # version, issue time in milliseconds since the epoch
_NONCE_RANDOM_BYTES = 12
_NONCE_MAC_BYTES = 16
_NONCE_RAW_LEN = _NONCE_HEADER.size + _NONCE_RANDOM_BYTES + _NONCE_MAC_BYTES
_NONCE_B64_RE = re.compile(r"[A-Za-z0-9_-]+")


def _as_key(secret: bytes | str) -> bytes:
    key = secret.encode("utf-8") if isinstance(secret, str) else bytes(secret)
    if len(key) < 16:
        # Anyone who guesses the secret can mint nonces for every gateway; refuse toy secrets.
        raise ValueError("the Digest nonce secret must be at least 16 bytes")
    return key


class HmacNonceIssuer:
    """Self-validating nonces: ``base64url(version | issued_ms | random | HMAC(secret, ...))``.

    No server-side storage, so every gateway instance sharing ``secret`` accepts the nonces of the
    others. ``old_secrets`` are accepted but never used to issue, to allow rotating the secret
    without failing every CPE that is mid-handshake. The realm is inside the MAC so that a nonce
    from another realm sharing the secret is not accepted here.
    """

    def __init__(
        self,
        secret: bytes | str,
        *,
        realm: str = "",
        ttl: float = 300.0,
        old_secrets: Sequence[bytes | str] = (),
        clock_skew: float = 30.0,
    ) -> None:
        if ttl <= 0:
            raise ValueError("nonce ttl must be positive")
        prefix = b"cwmp-digest-nonce\x00" + realm.encode("utf-8") + b"\x00"
        # One HMAC per key with the key schedule and the fixed prefix already hashed: each nonce
        # then costs a copy() and an update() instead of a fresh hmac.new (measured 1.5 against
        # 2.2 us; the one-shot hmac.digest is no faster than hmac.new here).
        self._macs = [hmac.new(_as_key(key), prefix, hashlib.sha256) for key in (secret, *old_secrets)]
        self.ttl = ttl
        self.clock_skew = clock_skew

    def _mac(self, keyed: hmac.HMAC, header: bytes) -> bytes:
        mac = keyed.copy()
        mac.update(header)
        return mac.digest()[:_NONCE_MAC_BYTES]

    def issue(self, now: float) -> str:
        header = _NONCE_HEADER.pack(_NONCE_VERSION, max(0, int(now * 1000)))
        header += secrets.token_bytes(_NONCE_RANDOM_BYTES)
        raw = header + self._mac(self._macs[0], header)
        # base64url without padding: no characters that need escaping in a quoted-string, and
        # nothing a sloppy CPE parser could trip over ("=" or "/").
        return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")

    def check(self, nonce: str, now: float) -> NonceCheck:
        if len(nonce) > 128 or not _NONCE_B64_RE.fullmatch(nonce):
            return NonceCheck(NonceStatus.INVALID, "malformed nonce")
        try:
            raw = base64.urlsafe_b64decode(nonce + "=" * (-len(nonce) % 4))
        except (binascii.Error, ValueError):
            return NonceCheck(NonceStatus.INVALID, "malformed nonce")
        if len(raw) != _NONCE_RAW_LEN:
            return NonceCheck(NonceStatus.INVALID, "malformed nonce")
        header, mac = raw[:-_NONCE_MAC_BYTES], raw[-_NONCE_MAC_BYTES:]
        if not any(hmac.compare_digest(mac, self._mac(keyed, header)) for keyed in self._macs):
            return NonceCheck(NonceStatus.INVALID, "nonce signature mismatch (not issued here)")
        version, issued_ms = _NONCE_HEADER.unpack_from(header)
        if version != _NONCE_VERSION:
            return NonceCheck(NonceStatus.INVALID, f"unknown nonce version {version}")
        age = now - issued_ms / 1000.0
        if age < -self.clock_skew:
            # Instances' clocks differ a little; a nonce far in the future means a broken clock.
            return NonceCheck(NonceStatus.INVALID, "nonce issued in the future")
        if age > self.ttl:
            return NonceCheck(NonceStatus.STALE, f"nonce expired {age - self.ttl:.0f} s ago")
        return NonceCheck(NonceStatus.VALID)


class NonceCountStore(Protocol):
    """Remembers the highest nonce count seen per nonce, to refuse replayed requests.

    ``check_and_record`` returns False when ``nc`` is not greater than the last value recorded
    for ``nonce`` (a replay), otherwise records it and returns True. It is only called for
    requests whose response digest is already verified, so unauthenticated traffic cannot fill it.
    """

    def check_and_record(self, nonce: str, nc: int) -> bool: ...


class MemoryNonceCountStore:
    """Per-process :class:`NonceCountStore` with bounded size and expiry.

    Entries live for ``ttl`` seconds from their first use; keep ``ttl`` at least the nonce
    lifetime plus clock skew, since after that the nonce itself is refused as stale. When full,
    the oldest entry is dropped. Not thread-safe: meant for one asyncio event loop. Behind a load
    balancer it protects only against replays that reach the same instance; plug a shared store in
    where that matters (or check ``DigestResult.nonce``/``nc`` yourself).
    """

    def __init__(
        self,
        max_entries: int = 100_000,
        ttl: float = 900.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        self.ttl = ttl
        self._clock = clock
        # Insertion order is first-use order, so expiry only ever looks at the front.
        self._entries: OrderedDict[str, tuple[int, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def check_and_record(self, nonce: str, nc: int) -> bool:
        now = self._clock()
        while self._entries:
            first_nonce, (_, first_seen) = next(iter(self._entries.items()))
            if now - first_seen <= self.ttl:
                break
            del self._entries[first_nonce]
        entry = self._entries.get(nonce)
        if entry is not None:
            last_nc, first_seen = entry
            if nc <= last_nc:
                return False
            self._entries[nonce] = (nc, first_seen)  # updating a key keeps its position
            return True
        self._entries[nonce] = (nc, now)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return True


# --------------------------------------------------------------------------------------------
# Server
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DigestResult:
    """Outcome of :meth:`DigestServer.verify`.

    ``reason`` is for logs and metrics, not for the client. ``stale`` means the credentials were
    right but the nonce expired: send a new challenge with ``stale=true`` so the CPE retries
    without treating it as a password failure. ``replayed`` means the credentials were right but
    the nonce count was used before (a replay, or a client that never increments it): at the
    start of a session the same answer as ``stale``; inside a session that proved itself
    otherwise, a server may accept the request anyway. ``wrong_password`` is set only when the
    password was actually tested and failed (or the user is unknown): the one failure a password
    guesser learns from, hence the one worth counting towards throttling.
    """

    ok: bool
    username: str | None = None
    reason: str = ""
    stale: bool = False
    replayed: bool = False
    wrong_password: bool = False
    algorithm: str | None = None
    nonce: str | None = None
    nc: int | None = None


def _normalise_uri(uri: str) -> tuple[str, str]:
    parts = urlsplit(uri)
    return unquote(parts.path or "/"), parts.query


def _uri_matches(digest_uri: str, request_uri: str) -> bool:
    if digest_uri == request_uri:
        return True
    # Clients may send the absolute form ("http://acs:7547/") or a differently escaped path;
    # what must match is the resource, i.e. path and query.
    try:
        return _normalise_uri(digest_uri) == _normalise_uri(request_uri)
    except ValueError:
        return False


PasswordLookup = Callable[[str], str | None]
HA1Lookup = Callable[[str, str], str | None]


class DigestServer:
    """Stateless Digest verifier for the gateway and the file server.

    ``secret`` keys the nonce MAC and must be shared by every instance. ``algorithms`` are offered
    in order; most CPEs only do MD5, and some only parse a single challenge, so the default
    offers MD5 alone. Only ``qop=auth`` is offered (the CWMP body is not covered by Digest).
    """

    def __init__(
        self,
        realm: str,
        secret: bytes | str,
        algorithms: Sequence[str] = ("MD5",),
        nonce_ttl: float = 300.0,
        *,
        opaque: str | None = None,
        nonce_counts: NonceCountStore | None = None,
        nonces: NonceIssuer | None = None,
        old_secrets: Sequence[bytes | str] = (),
        allow_missing_qop: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not algorithms:
            raise ValueError("at least one algorithm is required")
        canonical: list[str] = []
        for name in algorithms:
            alg = canonical_algorithm(name)
            if alg is None:
                raise ValueError(f"unsupported digest algorithm {name!r}")
            canonical.append(alg)
        if '"' in realm or "\\" in realm:
            raise ValueError("realm must not contain quotes or backslashes")
        self.realm = realm
        self.algorithms: tuple[str, ...] = tuple(canonical)
        self.nonce_ttl = nonce_ttl
        key = _as_key(secret)
        # A fixed per-realm opaque: every instance derives the same value, so it survives the
        # CPE's next request landing elsewhere and a rotation of the secret. It carries no
        # security weight here (the nonce MAC does), so it need not be secret.
        self.opaque = (
            opaque
            if opaque is not None
            else hashlib.sha256(b"cwmp-digest-opaque\x00" + realm.encode()).hexdigest()[:32]
        )
        self._nonces: NonceIssuer = nonces or HmacNonceIssuer(
            key, realm=realm, ttl=nonce_ttl, old_secrets=old_secrets
        )
        self._counts: NonceCountStore = (
            nonce_counts if nonce_counts is not None else MemoryNonceCountStore(ttl=nonce_ttl + 120.0)
        )
        # RFC 2069 clients send no qop and hence no nc: nothing stops a replay within the nonce
        # lifetime, so such clients are refused unless explicitly allowed.
        self.allow_missing_qop = allow_missing_qop
        self._clock = clock

    # -- challenges ------------------------------------------------------------------------

    def challenges(self, stale: bool = False, now: float | None = None) -> list[str]:
        """One ``WWW-Authenticate`` value per offered algorithm, most preferred first.

        Send them as separate header lines (RFC 7616 section 3.3) or use :meth:`challenge`.
        All share one fresh nonce: issue a new challenge for every new TCP connection (A3/S3).
        """
        nonce = self._nonces.issue(self._clock() if now is None else now)
        out = []
        for alg in self.algorithms:
            value = (
                f'Digest realm={_quote(self.realm)}, qop="auth", nonce={_quote(nonce)}, '
                f"opaque={_quote(self.opaque)}, algorithm={alg}"
            )
            if stale:
                value += ", stale=true"
            out.append(value)
        return out

    def challenge(self, stale: bool = False, now: float | None = None) -> str:
        """A single ``WWW-Authenticate`` value carrying every offered challenge."""
        return ", ".join(self.challenges(stale=stale, now=now))

    # -- verification ----------------------------------------------------------------------

    def verify(
        self,
        method: str,
        uri: str,
        authorization: str | DigestCredentials | None,
        lookup_password: PasswordLookup | None = None,
        *,
        lookup_ha1: HA1Lookup | None = None,
        now: float | None = None,
    ) -> DigestResult:
        """Check an ``Authorization`` header for a request ``method uri``.

        ``uri`` is the request target as received (path plus ``?query``). Give exactly one of
        ``lookup_password(username) -> password | None`` or ``lookup_ha1(username, algorithm) ->
        hex HA1 | None`` where ``algorithm`` is "MD5" or "SHA-256" (stored ``H(user:realm:pass)``,
        see :func:`compute_ha1`). Never raises for bad input; see :class:`DigestResult`.
        """
        if (lookup_password is None) == (lookup_ha1 is None):
            raise TypeError("give exactly one of lookup_password and lookup_ha1")
        now = self._clock() if now is None else now

        if authorization is None or (isinstance(authorization, str) and not authorization.strip()):
            return DigestResult(ok=False, reason="missing Authorization header")
        if isinstance(authorization, DigestCredentials):
            creds = authorization
        else:
            try:
                creds = parse_authorization(authorization)
            except AuthHeaderError as exc:
                return DigestResult(ok=False, reason=f"malformed Authorization header: {exc}")

        def fail(
            reason: str, *, stale: bool = False, replayed: bool = False, wrong_password: bool = False
        ) -> DigestResult:
            return DigestResult(
                ok=False,
                username=creds.username,
                reason=reason,
                stale=stale,
                replayed=replayed,
                wrong_password=wrong_password,
                nonce=creds.nonce,
            )

        if creds.userhash:
            return fail("userhash is not supported")
        if creds.realm != self.realm:
            return fail(f"realm mismatch: got {creds.realm!r}")
        algorithm = canonical_algorithm(creds.algorithm)
        if algorithm is None or algorithm not in self.algorithms:
            return fail(f"algorithm {creds.algorithm!r} was not offered")
        if creds.qop is None:
            if not self.allow_missing_qop:
                return fail("qop missing (RFC 2069 digest not allowed)")
            if algorithm.endswith("-sess"):
                return fail(f"{algorithm} requires qop")
        elif creds.qop.lower() != "auth":
            return fail(f"qop {creds.qop!r} was not offered")
        if creds.opaque is not None and not hmac.compare_digest(
            creds.opaque.encode("utf-8"), self.opaque.encode("utf-8")
        ):
            # An absent opaque is tolerated: it protects nothing here and some CPEs drop it.
            return fail("opaque mismatch")
        if not _uri_matches(creds.uri, uri):
            return fail(f"uri mismatch: {creds.uri!r} vs request {uri!r}")

        nonce_check = self._nonces.check(creds.nonce, now)
        if nonce_check.status is NonceStatus.INVALID:
            return fail(f"invalid nonce: {nonce_check.detail}")

        base = algorithm.removesuffix("-sess")
        if lookup_password is not None:
            password = lookup_password(creds.username)
            ha1 = None if password is None else compute_ha1(base, creds.username, self.realm, password)
        else:
            assert lookup_ha1 is not None
            ha1 = lookup_ha1(creds.username, base)
            if ha1 is not None and not _HEX_RE.fullmatch(ha1):
                return fail("stored HA1 is not hexadecimal")
        known_user = ha1 is not None
        # Compute against a throwaway HA1 for unknown users so they cost the same time as a
        # wrong password and the response time does not reveal which usernames exist.
        expected = compute_response(
            algorithm,
            ha1 if ha1 is not None else _hex(base, secrets.token_bytes(16)),
            creds.nonce,
            method,
            creds.uri,
            qop=creds.qop,  # hashed as sent, even if its case is unusual
            nc=creds.nc,
            cnonce=creds.cnonce,
        )
        matches = hmac.compare_digest(expected.encode("ascii"), creds.response.lower().encode("utf-8"))
        if not known_user:
            return fail("unknown user", wrong_password=True)
        if not matches:
            return fail("response mismatch (wrong password or uri/method)", wrong_password=True)

        if nonce_check.status is NonceStatus.STALE:
            return fail(f"stale nonce: {nonce_check.detail}", stale=True)

        nc_value = creds.nc_value
        if creds.qop is not None and nc_value is not None:
            if not self._counts.check_and_record(creds.nonce, nc_value):
                return fail(f"nonce count {creds.nc} replayed", replayed=True)
        return DigestResult(
            ok=True,
            username=creds.username,
            algorithm=algorithm,
            nonce=creds.nonce,
            nc=nc_value,
        )


# --------------------------------------------------------------------------------------------
# Basic
# --------------------------------------------------------------------------------------------


def parse_basic(header: str | None) -> tuple[str, str] | None:
    """``(username, password)`` from ``Authorization: Basic ...``, or None when not usable.

    Decodes UTF-8 and falls back to ISO-8859-1 (RFC 7617 leaves the charset open, and older CPEs
    send Latin-1). Tolerates missing base64 padding. ``Basic Og==`` gives ``("", "")``.
    """
    if not header:
        return None
    parts = header.strip().split(None, 1)
    if len(parts) != 2 or parts[0].lower() != "basic":
        return None
    token = parts[1].strip()
    if len(token) > 4096:
        return None
    try:
        raw = base64.b64decode(token + "=" * (-len(token) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("iso-8859-1")
    username, sep, password = text.partition(":")
    if not sep:
        return None
    return username, password


def basic_authorization(username: str, password: str) -> str:
    """An ``Authorization`` value for Basic (UTF-8, RFC 7617)."""
    token = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
    return f"Basic {token}"


def basic_challenge(realm: str) -> str:
    """A ``WWW-Authenticate`` value for Basic. Only ever send it over TLS (checklist S1)."""
    return f"Basic realm={_quote(realm)}"


# --------------------------------------------------------------------------------------------
# Client
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Challenge:
    """One challenge from a ``WWW-Authenticate`` header (parameter names lower-cased)."""

    scheme: str
    params: Mapping[str, str] = field(default_factory=dict)
    token68: str | None = None

    @property
    def is_digest(self) -> bool:
        return self.scheme.lower() == "digest"

    @property
    def is_basic(self) -> bool:
        return self.scheme.lower() == "basic"

    @property
    def realm(self) -> str | None:
        return self.params.get("realm")

    @property
    def nonce(self) -> str | None:
        return self.params.get("nonce")

    @property
    def opaque(self) -> str | None:
        return self.params.get("opaque")

    @property
    def algorithm(self) -> str | None:
        return self.params.get("algorithm")

    @property
    def qop_options(self) -> tuple[str, ...]:
        """Offered qop values (``qop="auth,auth-int"``); empty for an RFC 2069 challenge."""
        raw = self.params.get("qop")
        if raw is None:
            return ()
        return tuple(part.strip().lower() for part in raw.split(",") if part.strip())

    @property
    def stale(self) -> bool:
        return self.params.get("stale", "").strip().lower() == "true"

    @property
    def usable(self) -> bool:
        """Whether :class:`DigestClient` can answer this challenge (for Digest ones)."""
        if not self.is_digest or not self.nonce or self.realm is None:
            return False
        algorithm = canonical_algorithm(self.algorithm)
        if algorithm is None:
            return False
        qops = self.qop_options
        if not qops:
            # -sess needs a cnonce, which RFC 2069 requests cannot carry: unanswerable.
            return not algorithm.endswith("-sess")
        return "auth" in qops or "auth-int" in qops


def parse_challenges(header: str | Iterable[str]) -> list[Challenge]:
    """Every challenge in one or several ``WWW-Authenticate`` values, in order.

    Raises :class:`AuthHeaderError` when a value does not parse. For duplicated parameters the
    first occurrence wins.
    """
    values = [header] if isinstance(header, str) else list(header)
    out: list[Challenge] = []
    for value in values:
        for raw in _parse_auth_list(value):
            params: dict[str, str] = {}
            for name, param_value in raw.params:
                params.setdefault(name, param_value)
            out.append(Challenge(raw.scheme, params, raw.token68))
    return out


def parse_challenge(header: str | Iterable[str], *, allow_basic: bool = True) -> Challenge:
    """The challenge to answer: the first usable Digest one (RFC 7616 section 3.7), else Basic.

    Raises :class:`DigestError` when there is none.
    """
    challenges = parse_challenges(header)
    for challenge in challenges:
        if challenge.usable:
            return challenge
    if allow_basic:
        for challenge in challenges:
            if challenge.is_basic:
                return challenge
    offered = ", ".join(sorted({c.scheme for c in challenges})) or "nothing"
    raise DigestError(f"no usable challenge (offered: {offered})")


def _new_cnonce() -> str:
    return secrets.token_hex(16)


class DigestClient:
    """Answers Digest (or, if allowed, Basic) challenges for one set of credentials.

    Keeps a nonce count per nonce, so a later request on the same nonce sends nc=00000002 and so
    on, as a CPE does for every request of a session. Calling :meth:`authorization` without a
    challenge reuses the last one (pre-emptive authorization for the rest of the session).
    Basic is refused unless ``allow_basic``: connection requests must not fall back to it (A5).
    """

    _MAX_NONCES = 32

    def __init__(
        self,
        username: str,
        password: str,
        *,
        allow_basic: bool = False,
        cnonce_factory: Callable[[], str] = _new_cnonce,
    ) -> None:
        self.username = username
        self.password = password
        self.allow_basic = allow_basic
        self._cnonce_factory = cnonce_factory
        self.challenge: Challenge | None = None
        self._counts: OrderedDict[str, tuple[int, str]] = OrderedDict()

    def reset(self) -> None:
        """Forget the last challenge and all nonce counts (e.g. at the end of a session)."""
        self.challenge = None
        self._counts.clear()

    def authorization(
        self,
        method: str,
        uri: str,
        www_authenticate: str | Iterable[str] | Challenge | None = None,
        *,
        body: bytes = b"",
    ) -> str:
        """The ``Authorization`` value for ``method uri``.

        ``uri`` is the request target as sent on the request line. ``body`` is only used when
        the server offers nothing but ``qop=auth-int``. Raises :class:`DigestError` when the
        challenge cannot be answered.
        """
        if www_authenticate is None:
            if self.challenge is None:
                raise DigestError("no challenge received yet")
            challenge = self.challenge
        elif isinstance(www_authenticate, Challenge):
            challenge = www_authenticate
        else:
            challenge = parse_challenge(www_authenticate, allow_basic=True)

        if challenge.is_basic:
            if not self.allow_basic:
                raise DigestError("server offers only Basic authentication, which is not allowed")
            self.challenge = challenge
            return basic_authorization(self.username, self.password)
        if not challenge.usable:
            qop = challenge.params.get("qop")
            raise DigestError(f"cannot answer challenge (algorithm={challenge.algorithm!r}, qop={qop!r})")
        self.challenge = challenge
        return self._digest(method, uri, challenge, body)

    def _digest(self, method: str, uri: str, challenge: Challenge, body: bytes) -> str:
        nonce = challenge.nonce
        realm = challenge.realm
        assert nonce is not None and realm is not None  # guaranteed by Challenge.usable
        algorithm = canonical_algorithm(challenge.algorithm)
        assert algorithm is not None
        qops = challenge.qop_options
        qop = None if not qops else ("auth" if "auth" in qops else "auth-int")

        previous = self._counts.pop(nonce, None)
        # One cnonce per nonce: -sess servers derive their session key from the first one.
        count, cnonce = (previous[0] + 1, previous[1]) if previous else (1, self._cnonce_factory())
        self._counts[nonce] = (count, cnonce)
        while len(self._counts) > self._MAX_NONCES:
            self._counts.popitem(last=False)
        nc = f"{count:08x}"

        ha1 = compute_ha1(algorithm, self.username, realm, self.password)
        response = compute_response(
            algorithm,
            ha1,
            nonce,
            method,
            uri,
            qop=qop,
            nc=nc if qop else None,
            cnonce=cnonce if qop or algorithm.endswith("-sess") else None,
            body=body,
        )

        if self.username.isascii():
            parts = [f"username={_quote(self.username)}"]
        else:
            # RFC 7616 section 3.4.4: non-ASCII names travel as an RFC 8187 ext-value.
            encoded = "".join(
                chr(b) if chr(b).isalnum() and b < 128 else f"%{b:02X}" for b in self.username.encode()
            )
            parts = [f"username*=UTF-8''{encoded}"]
        parts += [f"realm={_quote(realm)}", f"nonce={_quote(nonce)}", f"uri={_quote(uri)}"]
        if challenge.algorithm is not None:
            # Echo the server's spelling; RFC 2069-era servers may not know the directive at all,
            # so it is only sent when the challenge named it.
            parts.append(f"algorithm={challenge.algorithm}")
        parts.append(f'response="{response}"')
        if challenge.opaque is not None:
            parts.append(f"opaque={_quote(challenge.opaque)}")
        if qop is not None:
            parts += [f"qop={qop}", f"nc={nc}", f"cnonce={_quote(cnonce)}"]
        return "Digest " + ", ".join(parts)
