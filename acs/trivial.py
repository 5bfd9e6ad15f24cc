"""The reference for the benchmarks: the least an ACS can do (Inform -> InformResponse, then 204).

No authentication, no bus, no database, no XML parsing beyond finding the cwmp:ID: the ceiling
of this machine for CWMP sessions over HTTP with uvicorn.
"""

from __future__ import annotations

import re
from typing import Any

RESPONSE = (
    '<soap-env:Envelope xmlns:soap-env="http://schemas.xmlsoap.org/soap/envelope/" '
    'xmlns:cwmp="urn:dslforum-org:cwmp-1-0"><soap-env:Header><cwmp:ID soap-env:mustUnderstand="1">{id}'
    "</cwmp:ID></soap-env:Header><soap-env:Body><cwmp:InformResponse><MaxEnvelopes>1</MaxEnvelopes>"
    "</cwmp:InformResponse></soap-env:Body></soap-env:Envelope>"
)
ID = re.compile(rb"<cwmp:ID[^>]*>([^<]*)</cwmp:ID>")


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    if scope["path"] == "/healthz" or not body.strip():
        status, payload = (200, b"ok") if scope["path"] == "/healthz" else (204, b"")
    else:
        found = ID.search(body)
        status, payload = 200, RESPONSE.format(id=found.group(1).decode() if found else "").encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/xml"), (b"content-length", str(len(payload)).encode())]})
    await send({"type": "http.response.body", "body": payload})
