"""Prometheus metrics of the gateway."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

SESSIONS_STARTED = Counter("acs_gateway_sessions_started_total", "CWMP sessions started (Inform accepted)")
ROUTINE_SESSIONS = Counter("acs_gateway_routine_sessions_total",
                           "Sessions the gateway ended itself: nothing was due (the work-due marker)")
SESSIONS_ENDED = Counter("acs_gateway_sessions_ended_total", "CWMP sessions ended, by outcome", ["outcome"])
SESSIONS_ACTIVE = Gauge("acs_gateway_sessions_active", "CWMP sessions in progress on this instance")
SESSION_DURATION = Histogram("acs_gateway_session_duration_seconds", "Inform to end of session",
                             buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120))
RPCS = Counter("acs_gateway_rpcs_total", "RPCs sent to CPEs, by method and outcome", ["method", "outcome"])
CPE_REQUESTS = Counter("acs_gateway_cpe_requests_total", "Requests received from CPEs", ["method"])
AUTH_FAILURES = Counter("acs_gateway_auth_failures_total", "Wrong CPE credentials", ["scheme"])
REJECTED = Counter("acs_gateway_rejected_total", "Requests refused, by HTTP status and reason",
                   ["status", "reason"])
PUBLISH_LATENCY = Histogram("acs_gateway_publish_seconds", "Time until Kafka acknowledged an event",
                            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5))
PLAN_WAIT = Histogram("acs_gateway_plan_wait_seconds", "Time waiting for the orchestrator's plan",
                      buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
