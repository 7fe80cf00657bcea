"""Prometheus metrics of the Exchange runner (exposed with the others at /metrics)."""

from prometheus_client import Counter, Histogram

from mdm.core.metrics import REGISTRY

# One per runner call (a cmdlet or a batch, after its retries), by the logical cmdlet name
# (a batch counts under its last cmdlet's name) and the outcome: "ok" or an ExchangeError reason.
CMDLETS = Counter(
    "mdm_eas_cmdlets", "Exchange cmdlet calls, by cmdlet and outcome", ["cmdlet", "outcome"],
    registry=REGISTRY,
)
LATENCY = Histogram(
    "mdm_eas_cmdlet_seconds", "Time of an Exchange cmdlet call (retries included)", ["cmdlet"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
    registry=REGISTRY,
)
