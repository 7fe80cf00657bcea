"""One-time link tokens and the public URLs handed to devices and users.

A token is 32 random bytes (256 bits) in URL-safe base64; only its SHA-256 is stored, so a
database leak does not leak usable links. Lookup is by the hash (an indexed equality), which
needs no constant-time comparison: the secret itself is never compared.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping

from mdm.config import Config
from mdm.enroll.config import enroll_config

TOKEN_BYTES = 32
# token_urlsafe(32) is 43 characters of [A-Za-z0-9_-].
_TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{43}$")
LINK_PATH = "/e/"


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode("ascii")).digest()


def well_formed(token: str) -> bool:
    return bool(_TOKEN_RE.match(token))


def agent_token(token: str) -> str:
    """The one-time enrollment token of an agent's link (KES), derived from the link's token: the
    QR code made with the link and the package served by it carry the same token, yet neither
    secret is stored (only the hashes of both). 128 bits, 32 lowercase hex characters (the form
    of a ``mdm.scep.challenges`` challenge)."""
    return hmac.new(token.encode("ascii"), b"mdm kes enrollment token", hashlib.sha256).hexdigest()[:32]


def _origin(scheme: str, host: str, port: int, default_port: int) -> str:
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # IPv6 literal
    return f"{scheme}://{host}" if port == default_port else f"{scheme}://{host}:{port}"


def _port(config_port: int, bound: Mapping[str, int], key: str) -> int:
    # A configured port of 0 means "any free port" (tests): only the running server knows it.
    return bound.get(key, config_port) if config_port == 0 else config_port


def ios_origin(config: Config, bound: Mapping[str, int] | None = None) -> str:
    bound = bound or {}
    listener = config.listeners.ios
    key = "ios:https" if listener.mode == "tls" else "ios:http"
    return _origin("https", config.hostname, _port(listener.port, bound, key), 443)


def server_url(config: Config, bound: Mapping[str, int] | None = None) -> str:
    return enroll_config(config).server_url or ios_origin(config, bound) + "/mdm/server"


def checkin_url(config: Config, bound: Mapping[str, int] | None = None) -> str:
    return enroll_config(config).checkin_url or ios_origin(config, bound) + "/mdm/checkin"


def scep_url(config: Config, bound: Mapping[str, int] | None = None) -> str:
    return enroll_config(config).scep_url or ios_origin(config, bound) + "/scep"


def kes_address(config: Config, bound: Mapping[str, int] | None = None) -> tuple[str, int]:
    """Where agents reach the ``kes`` listener: ``[enroll] kes_host`` / ``kes_port`` (a
    publishing proxy), else ``hostname`` and the listener's port."""
    settings = enroll_config(config)
    port = settings.kes_port or _port(config.listeners.kes.port, bound or {}, "kes:https")
    return settings.kes_host or config.hostname, port


def link_base(config: Config, bound: Mapping[str, int] | None = None) -> str:
    """The web listener's public origin, always HTTPS (profiles are never served over plain
    HTTP): its HTTPS port (8061), or, when only plain HTTP is enabled, the TLS-terminating proxy
    in front of it at https://HOST (set ``enroll.link_base_url`` if the proxy uses another port)."""
    override = enroll_config(config).link_base_url
    if override:
        return override
    bound = bound or {}
    web = config.listeners.web
    if web.https_enabled or not web.http_enabled:
        return _origin("https", config.hostname, _port(web.https_port, bound, "web:https"), 443)
    return _origin("https", config.hostname, 443, 443)


def link_url(config: Config, token: str, bound: Mapping[str, int] | None = None) -> str:
    return f"{link_base(config, bound)}{LINK_PATH}{token}"
