"""Typed keys of the KES sync's services (set by ``plugin_sync`` at start-up; read by the admin
API's handlers and the bench)."""

from __future__ import annotations

from mdm.kes.service_mugshot import MugshotService
from mdm.kes.service_sync import SyncService
from mdm.kes.wakeups import KesPusher
from mdm.server.context import ServiceKey

SYNC = ServiceKey("kes.sync", SyncService)
MUGSHOTS = ServiceKey("kes.mugshots", MugshotService)
PUSHER = ServiceKey("kes.pusher", KesPusher)
