"""Secret parameters (passwords, Wi-Fi keys) and how they are hidden in API answers, events and logs.

A parameter is secret when the last segment of its name contains, in any case, one of
``Password``, ``Passphrase``, ``PreSharedKey``, ``WEPKey`` or ``Secret`` (so ``*Password``,
``*KeyPassphrase``, ``*PreSharedKey``, ``*WEPKey*`` ...), or matches one of the glob patterns of
ACS_REDACTED_PARAMETERS (a pattern without a dot is matched against the last segment, one with a
dot against the whole name; ``X_ACME_Token``, ``Device.Services.VoiceService.*.SIP.*.AuthPassword``).

Its value is replaced by :data:`REDACTED` wherever a person or another system can read it: every
API answer (task arguments and results, jobs, policies, device parameters), every event on
``device.events`` and every log line, for every role. An empty value stays empty (it says "not
set" and hides nothing). Only the internal topics carry a secret where it is needed: the plan on
``cwmp.replies`` that tells the gateway the SetParameterValues to send (docs/deploy.md says how to
protect them).

The patterns are process-wide: each service calls :func:`configure` with its settings at start.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any, TypeVar

from pydantic import BaseModel

M = TypeVar("M", bound=BaseModel)

REDACTED = "<redacted>"
_MARKERS = ("password", "passphrase", "presharedkey", "wepkey", "secret")
# Keys of a mapping (log extras, RPC arguments) whose value is a secret whatever it is called.
_SECRET_KEYS = frozenset({"password", "cr_password", "pending_cr_password", "authorization", "api_key",
                          "x-api-key", "secret", "secret_key", "key"})
_patterns: tuple[tuple[re.Pattern[str], bool], ...] = ()


def configure(patterns: Iterable[str]) -> None:
    """Add glob patterns (ACS_REDACTED_PARAMETERS) to the built-in ones, for this process."""
    global _patterns
    compiled = []
    for pattern in (p.strip() for p in patterns):
        if pattern:
            compiled.append((re.compile(fnmatch.translate(pattern), re.IGNORECASE), "." in pattern))
    _patterns = tuple(compiled)
    is_secret.cache_clear()


def configure_from(settings: Any) -> None:
    configure(str(getattr(settings, "redacted_parameters", "") or "").split(","))


@lru_cache(maxsize=65536)
def is_secret(name: str) -> bool:
    last = name.rstrip(".").rsplit(".", 1)[-1]
    lowered = last.lower()
    if any(marker in lowered for marker in _MARKERS):
        return True
    return any(pattern.fullmatch(name if whole else last) for pattern, whole in _patterns)


def value(name: str, current: Any) -> Any:
    """``current`` hidden when ``name`` is secret (an empty value stays as it is)."""
    if not is_secret(name) or current in (None, ""):
        return current
    if isinstance(current, Mapping) and "value" in current:  # {"value": ..., "type": ...}
        return {**current, "value": value(name, current["value"])}
    return REDACTED


def redact_model(model: M) -> M:
    """A copy of a pydantic model (an event) with every secret hidden (see :func:`redact`)."""
    dumped = model.model_dump(mode="json")
    cleaned = redact(dumped)
    return model if cleaned == dumped else model.model_validate(cleaned)


def redact(data: Any) -> Any:
    """A copy of ``data`` (JSON-like) with every secret hidden, however deep.

    Recognised shapes: ``{"name": <secret>, "value"|"old"|"new": ...}`` (parameter values, value
    changes, SPV arguments), ``[<secret name>, value, ...]`` (SPV shorthand), ``{<secret name>:
    value}`` (parameters keyed by name), and keys such as ``password`` or ``authorization``.
    """
    if isinstance(data, Mapping):
        name = data.get("name")
        out: dict[Any, Any] = {}
        for key, item in data.items():
            if isinstance(name, str) and key in ("value", "old", "new"):
                out[key] = value(name, item)
            elif isinstance(key, str) and key.lower() in _SECRET_KEYS and item not in (None, ""):
                out[key] = REDACTED
            elif isinstance(key, str) and "." in key and is_secret(key) and not isinstance(item, (Mapping, list)):
                out[key] = value(key, item)
            elif isinstance(key, str) and "." in key and is_secret(key) and isinstance(item, Mapping):
                out[key] = {k: (value(key, v) if k == "value" else redact(v)) for k, v in item.items()}
            else:
                out[key] = redact(item)
        return out
    if isinstance(data, (list, tuple)):
        if len(data) >= 2 and isinstance(data[0], str) and "." in data[0] and is_secret(data[0]) \
                and not isinstance(data[1], (Mapping, list)):
            return [data[0], value(data[0], data[1]), *data[2:]]
        return [redact(item) for item in data]
    return data
