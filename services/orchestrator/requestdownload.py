"""RequestDownload (TR-069 A.4.2.2): the CPE asks for a file of a FileType; the ACS may serve one.

The ACS always answers the RPC itself with an empty RequestDownloadResponse (the gateway does).
What it then does is decided here, by one small rule, kept apart so that profiles (issue #17)
can replace it: :data:`Rule` takes what the CPE asked for plus the catalogued candidates and
returns the file to serve (or ``None``). The default, :func:`newest_matching`, serves the newest
catalogued operator file of the requested FileType meant for the device (its ``oui`` and
``product_class`` metadata empty or equal to the device's). The served file goes out as an
ordinary ``download`` task (origin ``request-download``) in the device's next session; nothing
here does I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

ORIGIN = "request-download"


@dataclass(frozen=True, slots=True)
class Ask:
    """What the CPE asked for, and who it is."""

    device_id: str
    file_type: str
    file_type_args: dict[str, str]
    oui: str
    product_class: str


# (ask, candidate files as the fileserver lists them) -> the chosen file's record, or None.
Rule = Callable[[Ask, Sequence[Mapping[str, Any]]], Mapping[str, Any] | None]


def read_ask(device_id: str, rpc: Mapping[str, Any], oui: str, product_class: str) -> Ask:
    args = {str(a.get("name", "")): str(a.get("value", "")) for a in rpc.get("file_type_arg") or []
            if isinstance(a, Mapping)}
    return Ask(device_id=device_id, file_type=str(rpc.get("file_type") or ""), file_type_args=args,
               oui=oui, product_class=product_class)


def newest_matching(ask: Ask, files: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The default rule: the newest operator file of the FileType that fits the device."""
    def fits(record: Mapping[str, Any]) -> bool:
        return (record.get("kind", "file") == "file" and record.get("file_type") == ask.file_type
                and record.get("oui") in (None, "", ask.oui)
                and record.get("product_class") in (None, "", ask.product_class))

    candidates = [f for f in files if fits(f)]
    return max(candidates, key=lambda f: str(f.get("uploaded_at") or "")) if candidates else None


RULE: Rule = newest_matching
"""The rule in force; replace it (one assignment) to serve files another way."""


def download_args(record: Mapping[str, Any], url: str) -> dict[str, Any]:
    """The stored args of the ``download`` task that serves ``record`` (as the API would make them)."""
    return {"file_name": record["name"], "file_type": record.get("file_type"), "target_file_name": "",
            "delay_seconds": 0, "file_size": int(record.get("size") or 0), "url": url,
            "version": record.get("version")}
