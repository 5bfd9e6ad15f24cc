"""The event contracts: JSON round trips, the discriminator, and the published AsyncAPI document."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from services.bus.asyncapi import build_asyncapi, render
from services.bus.events import (
    DeviceIdentity,
    InformReceived,
    RpcResponseReceived,
    SessionEnded,
    decode_inbound,
    encode,
)

REPO = Path(__file__).resolve().parents[3]
REF = {"device_id": "00D09E-Box-1", "session_id": "s", "reply_to": "cwmp.replies:3", "gateway_id": "g"}


def test_inbound_events_round_trip_through_json_by_type() -> None:
    inform = InformReceived(**REF, device=DeviceIdentity(oui="00D09E", serial_number="1"), events=[],
                            parameters=[])
    response = RpcResponseReceived(**REF, rpc_id="r1", method="GetRPCMethodsResponse",
                                   rpc={"method": "GetRPCMethodsResponse", "method_list": ["Inform"]},
                                   request={"method": "GetRPCMethods"})
    ended = SessionEnded(**REF, outcome="timeout", unanswered_rpc_ids=[])
    for event in (inform, response, ended):
        assert decode_inbound(encode(event)) == event


def test_an_unknown_inbound_type_is_refused() -> None:
    with pytest.raises(ValidationError):
        decode_inbound(b'{"type": "surprise", "device_id": "x"}')


def test_asyncapi_document_in_docs_is_the_generated_one() -> None:
    committed = (REPO / "docs" / "asyncapi.yaml").read_text()
    assert committed == render(), "regenerate it: acs asyncapi > docs/asyncapi.yaml"


def test_asyncapi_references_resolve() -> None:
    document = build_asyncapi()
    schemas = document["components"]["schemas"]
    text = str(document)
    for ref in {part.split("'")[0] for part in text.split("#/components/schemas/")[1:]}:
        assert ref in schemas, ref
    assert {c["address"] for c in document["channels"].values()} == {
        "device.events", "file.events", "cwmp.inbound", "cwmp.replies", "campaign.events", "acs.audit"}
