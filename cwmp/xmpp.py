"""XMPP connection requests (TR-069 Annex K): the stanzas, built and read. No I/O here.

The ACS sends the CPE's XMPP client an ``iq`` of type ``get`` holding
``<connectionRequest xmlns="urn:broadband-forum-org:cwmp:xmppConnReq-1-0">`` with the
connection request username and password (the same ConnectionRequestUsername/Password as the
HTTP method). The CPE answers an empty ``iq`` of type ``result`` and opens a session with
"6 CONNECTION REQUEST", or an ``iq`` of type ``error``: ``not-authorized`` for wrong credentials,
``service-unavailable`` when it will not (rate limit, busy). The transport (the XMPP stream) lives
with its users: services/common/xmppclient.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from xml.etree import ElementTree as ET
from xml.sax.saxutils import escape, quoteattr

__all__ = [
    "CONNREQ_NS",
    "ConnectionRequestStanza",
    "build_connection_request",
    "build_error",
    "build_result",
    "read_connection_request",
    "read_error_condition",
]

CONNREQ_NS = "urn:broadband-forum-org:cwmp:xmppConnReq-1-0"
STANZA_ERROR_NS = "urn:ietf:params:xml:ns:xmpp-stanzas"
CLIENT_NS = "jabber:client"


@dataclass(frozen=True, slots=True)
class ConnectionRequestStanza:
    iq_id: str
    sender: str
    username: str
    password: str


def _attrs(kind: str, iq_id: str, to: str, sender: str | None) -> str:
    parts = [f"type={quoteattr(kind)}", f"id={quoteattr(iq_id)}", f"to={quoteattr(to)}"]
    if sender:
        parts.append(f"from={quoteattr(sender)}")
    return " ".join(parts)


def build_connection_request(iq_id: str, to: str, username: str, password: str, sender: str | None = None) -> bytes:
    return (f"<iq {_attrs('get', iq_id, to, sender)}><connectionRequest xmlns={quoteattr(CONNREQ_NS)}>"
            f"<username>{escape(username)}</username><password>{escape(password)}</password>"
            "</connectionRequest></iq>").encode()


def build_result(iq_id: str, to: str) -> bytes:
    return f"<iq {_attrs('result', iq_id, to, None)}/>".encode()


def build_error(iq_id: str, to: str, condition: str, error_type: str = "cancel") -> bytes:
    """``condition``: ``not-authorized`` (wrong credentials), ``service-unavailable`` (not now)."""
    return (f"<iq {_attrs('error', iq_id, to, None)}><error type={quoteattr(error_type)}>"
            f"<{condition} xmlns={quoteattr(STANZA_ERROR_NS)}/></error></iq>").encode()


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def read_connection_request(iq: ET.Element) -> ConnectionRequestStanza | None:
    """The connection request an ``iq`` carries, or None when it carries none."""
    if _local(iq.tag) != "iq" or iq.get("type") != "get":
        return None
    request = iq.find(f"{{{CONNREQ_NS}}}connectionRequest")
    if request is None:
        return None
    username = request.find(f"{{{CONNREQ_NS}}}username")
    password = request.find(f"{{{CONNREQ_NS}}}password")
    return ConnectionRequestStanza(iq_id=iq.get("id", ""), sender=iq.get("from", ""),
                                   username=(username.text or "") if username is not None else "",
                                   password=(password.text or "") if password is not None else "")


def read_error_condition(iq: ET.Element) -> str | None:
    """The defined condition of an ``iq`` of type error (``not-authorized``...), else None."""
    if iq.get("type") != "error":
        return None
    error = next((e for e in iq if _local(e.tag) == "error"), None)
    if error is None:
        return "undefined-condition"
    condition = next((c for c in error if c.tag.startswith(f"{{{STANZA_ERROR_NS}}}")), None)
    return _local(condition.tag) if condition is not None else "undefined-condition"
