"""Prometheus metrics shared by all listeners (exposed on the admin listener at /metrics)."""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from mdm.db import metrics as db_metrics

REGISTRY = CollectorRegistry(auto_describe=True)
for _metric in db_metrics.ALL:  # SQLite's write queue and lock waits (mdm.db sits below core)
    REGISTRY.register(_metric)

HTTP_REQUESTS = Counter(
    "mdm_http_requests_total", "HTTP requests answered", ["listener", "status"], registry=REGISTRY
)
HTTP_LATENCY = Histogram(
    "mdm_http_request_seconds",
    "Time to answer an HTTP request",
    ["listener"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
    registry=REGISTRY,
)
COMMANDS_QUEUED = Gauge("mdm_command_queue_depth", "Commands waiting in the hot queue", registry=REGISTRY)
EVENTS_UNDELIVERED = Gauge(
    "mdm_events_undelivered", "Events in the outbox not yet delivered", registry=REGISTRY
)
DEVICES = Gauge("mdm_devices", "Managed devices", ["protocol", "status"], registry=REGISTRY)
# Not answered at all, so not in mdm_http_requests_total: routine on mobile networks, never a 500.
HTTP_CLIENT_GONE = Counter(
    "mdm_http_client_disconnects",
    "Requests whose client closed the connection before the answer (e.g. mid-upload)",
    ["listener"],
    registry=REGISTRY,
)
# Refused by aiohttp's HTTP parser (request line, headers, chunked framing) before any handler ran.
HTTP_MALFORMED = Counter(
    "mdm_http_malformed_requests",
    "Requests the HTTP parser refused with 400 before routing",
    registry=REGISTRY,
)
SECURITY_REJECTIONS = Counter(
    "mdm_security_rejections",
    "Rejected requests reported as security events: written one by one, or counted into an aggregate",
    ["event", "recorded"],
    registry=REGISTRY,
)
