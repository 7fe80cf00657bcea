"""What every handler and worker can reach: configuration, database, CA, TLS contexts, and the
services that feature packages attach at start-up."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from mdm.config import Config
from mdm.db.engine import Database
from mdm.pki.ca import CertificateAuthority
from mdm.server.tls import ReloadableContext


@dataclass
class ServerContext:
    config: Config
    db: Database
    ca: CertificateAuthority
    tls: dict[str, ReloadableContext] = field(default_factory=dict)
    # Feature services by name (e.g. "push.apns", "pki.issuer"); set by their start-up hooks.
    services: dict[str, Any] = field(default_factory=dict)
    # Ports actually bound, by "listener:scheme" (e.g. "ios:https", "web:http"); differs from the
    # configured port when that is 0 (ephemeral). Used to build URLs handed to devices.
    bound_ports: dict[str, int] = field(default_factory=dict)


CTX = web.AppKey("mdm_ctx", ServerContext)


def ctx_of(request: web.Request) -> ServerContext:
    return request.app[CTX]
