"""Events of the service itself: started (listeners bound), stopped (graceful shutdown) and a
listener that could not be opened (written before the process exits)."""

from __future__ import annotations

from mdm.core.events import EventBody, EventType
from mdm.db.enums import Severity


class ServiceStarted(EventBody):
    version: str
    pid: int
    # "<listener>:<http|https>" -> the port it listens on
    listeners: dict[str, int]


class ServiceStopped(EventBody):
    version: str
    pid: int
    uptime_seconds: float
    # Requests still running when the grace period ended (closed unfinished)
    unfinished_requests: int = 0


class ListenerFailed(EventBody):
    listener: str
    bind: str
    port: int
    # The configuration key and environment variable that set the port
    config_key: str
    error: str


SERVICE_STARTED = EventType(
    "service_started", Severity.INFO, ServiceStarted,
    "The service started: every enabled listener is bound and the workers are running",
    example={
        "version": "0.1.0", "pid": 4242,
        "listeners": {"ios:https": 443, "kes:https": 13292, "admin:https": 13299, "web:http": 8060},
    },
)
SERVICE_STOPPED = EventType(
    "service_stopped", Severity.INFO, ServiceStopped,
    "The service stopped gracefully (SIGTERM/SIGINT): listeners closed, in-flight requests "
    "finished or cut at the grace period, workers stopped; the last event before the database closes",
    example={"version": "0.1.0", "pid": 4242, "uptime_seconds": 86400.5, "unfinished_requests": 0},
)
LISTENER_FAILED = EventType(
    "listener_failed", Severity.CRITICAL, ListenerFailed,
    "A listener could not be opened (port in use, no privilege, address not on this host): the "
    "service does not start; written before the process exits",
    example={
        "listener": "ios", "bind": "192.0.2.10", "port": 443, "config_key": "listeners.ios.port",
        "error": "port 443 (ios listener) is already in use (listeners.ios.port / MDM_IOS_PORT): "
        "stop the other process or choose another port",
    },
)
