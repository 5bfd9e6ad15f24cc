"""How the Kafka clients connect: plain by default, TLS and SASL (SCRAM) when the settings say so."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from services.bus.kafka import client_options, make_consumer, make_producer
from services.common.settings import Settings


def test_plain_by_default() -> None:
    assert client_options(Settings(kafka_bootstrap="k:9092")) == {"bootstrap_servers": "k:9092",
                                                                  "security_protocol": "PLAINTEXT"}


# The system's CA bundle stands in for the cluster CA (a PEM file the TLS context must load).
CA = Path(ssl.get_default_verify_paths().cafile or "/nonexistent")


@pytest.mark.skipif(not CA.is_file(), reason="no system CA bundle to stand in for the cluster CA")
async def test_tls_with_scram_reaches_every_kind_of_client() -> None:
    ca = CA
    settings = Settings(kafka_bootstrap="acs-kafka-kafka-bootstrap:9093", kafka_security_protocol="SASL_SSL",
                        kafka_ssl_cafile=str(ca), kafka_sasl_username="acs-gateway", kafka_sasl_password="pw")
    options = client_options(settings)
    assert isinstance(options["ssl_context"], ssl.SSLContext)
    assert options["ssl_context"].verify_mode is ssl.CERT_REQUIRED
    assert (options["sasl_mechanism"], options["sasl_plain_username"]) == ("SCRAM-SHA-512", "acs-gateway")
    producer, consumer = make_producer(settings), make_consumer(settings, "cwmp.replies", group_id=None)
    try:
        for client in (producer.client, consumer._client):
            assert (client._security_protocol, client._sasl_mechanism) == ("SASL_SSL", "SCRAM-SHA-512")
    finally:
        await producer.stop()
        await consumer.stop()
