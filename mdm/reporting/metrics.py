"""Prometheus metrics of the outbox's delivery (exposed with the others at /metrics). The backlog
gauges are set by the replica that delivers, from bounded reads every few seconds."""

from prometheus_client import Counter, Gauge, Histogram

from mdm.core.metrics import REGISTRY

BACKLOG = Gauge(
    "mdm_reporting_backlog", "Events waiting for delivery to the core server (not dead-lettered; "
    "counted up to 1,000,000)", registry=REGISTRY,
)
OLDEST_AGE = Gauge(
    "mdm_reporting_oldest_undelivered_seconds", "Age of the oldest event waiting for delivery (0: none)",
    registry=REGISTRY,
)
LATENCY = Histogram(
    "mdm_reporting_delivery_latency_seconds", "From an event's creation to its delivery to the core server",
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 21600, 86400),
    registry=REGISTRY,
)
DELIVERED = Counter(
    "mdm_reporting_delivered", "Events the core server accepted", registry=REGISTRY
)
FAILURES = Counter(
    "mdm_reporting_failures", "Failed delivery attempts (batches), by the transport's reason",
    ["reason"], registry=REGISTRY,
)
REFUSED = Counter(
    "mdm_reporting_refused", "Refusals of single events by the core server", registry=REGISTRY
)
DEAD_LETTERED = Counter(
    "mdm_reporting_dead_lettered", "Events given up on, by cause (refused: after the configured refusals; "
    "age: older than dead_letter_after_seconds)", ["cause"], registry=REGISTRY,
)
DEAD_LETTERS = Gauge(
    "mdm_reporting_dead_letters", "Dead-lettered events in the outbox (counted up to 1,000,000)",
    registry=REGISTRY,
)
PRUNED = Counter(
    "mdm_reporting_pruned", "Delivered events deleted after the retention period", registry=REGISTRY
)
LINK_UP = Gauge(
    "mdm_reporting_core_link_up", "1 while the core link is up, 0 while down (on the delivering replica)",
    registry=REGISTRY,
)
DELIVERER = Gauge(
    "mdm_reporting_deliverer", "1 on the replica that holds the delivery lock", registry=REGISTRY
)
