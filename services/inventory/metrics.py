"""Prometheus metrics of the inventory (served on /metrics by services.common.service)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

MESSAGES = Counter("acs_inventory_messages_total", "Inbound messages handled by the inventory",
                   ["outcome"])  # applied, skipped, ignored, malformed
BATCH_SECONDS = Histogram("acs_inventory_batch_seconds", "Time to apply one batch to MongoDB",
                          buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
RETRIES = Counter("acs_inventory_retries_total", "Batches retried after a dependency failed",
                  ["dependency"])
CONSUMER_LAG = Gauge("acs_inventory_consumer_lag", "Messages behind the end of cwmp.inbound",
                     ["partition"])
EVENTS_PUBLISHED = Counter("acs_inventory_device_events_total", "Device events published",
                           ["kind"])
QUERY_SECONDS = Histogram("acs_inventory_query_seconds", "Device query latency",
                          ["route"], buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5))
