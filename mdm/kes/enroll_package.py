"""The Android enrollment package: enrollment's ``ProfileBuilder`` for ``android``.

Enrollment makes the agent's one-time enrollment token (and, when asked, issues the user's
identity); this module checks what the package needs (a certificate in the ``M`` slot, the one the
``kes`` listener serves, whose SubjectPublicKeyInfo the agent pins) and writes the package as JSON
(``docs/kes-protocol.md``, "Enrollment package"). The link's QR code holds the same package
without the PKCS#12 and the CA certificates, plus the link (``KesPrerequisites.qr_text``).
The builder is registered at start-up (the ``PLUGIN`` below, composed after the enrollment
plugin); the CLI passes it to enrollment directly (``builders()``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from mdm.core.errors import Conflict
from mdm.enroll import links
from mdm.enroll.seams import (
    PROFILE_BUILDERS,
    AgentCredential,
    Env,
    IssuedCredential,
    Prepared,
    ProfileBuilders,
    ProfileContent,
)
from mdm.pki.ca import spki_der
from mdm.pki.listener_tls import RESERVE
from mdm.pki.slots import LISTENER_SLOT, load_slot_chain, slot_exists
from mdm.server.context import ServerContext
from mdm.server.plugin import Plugin

PLATFORM = "android"
CONTENT_TYPE = "application/vnd.mdm.kes-enrollment+json"
PACKAGE_TYPE = "kes-enrollment"
VERSION = 1
SLOT = LISTENER_SLOT["kes"]  # "M"


def spki_sha256(cert: x509.Certificate) -> str:
    """The pin of a certificate: base64 of the SHA-256 of its DER SubjectPublicKeyInfo."""
    return base64.b64encode(hashlib.sha256(spki_der(cert.public_key())).digest()).decode()


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


@dataclass(frozen=True)
class KesPrerequisites:
    """What every package of this server holds besides its token and identity."""

    host: str
    port: int
    pin: str
    reserve_pin: str | None
    issuers: tuple[x509.Certificate, ...]  # the M certificate's chain above the leaf
    warnings: tuple[str, ...] = ()

    @property
    def push_topic(self) -> str | None:
        return None  # the agent reports its FCM token when it registers

    def server(self) -> dict[str, Any]:
        return {"host": self.host, "port": self.port}

    def qr_text(self, url: str, token: str) -> str:
        """Compact JSON: what an agent needs to enroll by scanning the code (no PKCS#12)."""
        return json.dumps(
            {"v": VERSION, "type": PACKAGE_TYPE, "server": self.server(), "spki_sha256": self.pin,
             "token": token, "url": url},
            separators=(",", ":"),
        )


def _reserve_pin(env: Env) -> str | None:
    reserve = RESERVE.get(SLOT)
    if reserve is None or not slot_exists(env.config.certs_dir, reserve):
        return None
    try:
        return spki_sha256(load_slot_chain(env.config.certs_dir, reserve)[0])
    except (OSError, ValueError, IndexError):
        return None  # an unreadable reserve is the listener's problem, not the package's


def check_prerequisites(env: Env) -> KesPrerequisites:
    """The ``M`` certificate the agent pins, or a 409 naming what to configure. Reads files:
    call through ``asyncio.to_thread``."""
    certs_dir = env.config.certs_dir
    if not slot_exists(certs_dir, SLOT):
        raise Conflict(
            f"the kes listener has no certificate (slot {SLOT!r}): issue one with `mdm init` or install "
            f"one with `mdm certs set -t {SLOT} -i FILE.p12`; Android packages pin it",
            slot=SLOT,
        )
    try:
        chain = load_slot_chain(certs_dir, SLOT)
        leaf = chain[0]
    except (OSError, ValueError, IndexError) as exc:
        raise Conflict(f"the certificate of slot {SLOT!r} cannot be read: {exc}", slot=SLOT) from None
    host, port = links.kes_address(env.config, env.bound_ports)
    if port == 0:
        raise Conflict("listeners.kes.port = 0 (any free port) is only known to the running server: set "
                       "enroll.kes_port to the port agents reach", field="enroll.kes_port")
    warnings = []
    if leaf.not_valid_after_utc <= datetime.now(UTC):
        warnings.append(f"the kes listener's certificate (slot {SLOT!r}) has expired: agents will pin it "
                        "but the listener serves its reserve")
    if not env.config.listeners.kes.enabled:
        warnings.append("the kes listener is disabled (listeners.kes): agents cannot enroll until it is on")
    return KesPrerequisites(host, port, spki_sha256(leaf), _reserve_pin(env), tuple(chain[1:]),
                            tuple(warnings))


def _pkcs12(identity: IssuedCredential, user: str) -> dict[str, str]:
    password = secrets.token_urlsafe(18)
    encryption = (
        serialization.PrivateFormat.PKCS12.encryption_builder()
        .kdf_rounds(100_000)
        .key_cert_algorithm(pkcs12.PBES.PBESv2SHA256AndAES256CBC)
        .hmac_hash(hashes.SHA256())
        .build(password.encode())
    )
    data = pkcs12.serialize_key_and_certificates(
        f"{user} MDM identity".encode(), identity.key, identity.certificate, list(identity.chain) or None,
        encryption,
    )
    return {"data": base64.b64encode(data).decode(), "password": password}


def package(prepared: KesPrerequisites, content: ProfileContent) -> dict[str, Any]:
    credential = content.credential
    if not isinstance(credential, AgentCredential):
        raise TypeError(f"not an agent credential: {type(credential).__name__}")
    anchors: list[x509.Certificate] = []
    for cert in (*content.roots, *prepared.issuers):
        if cert not in anchors:
            anchors.append(cert)
    out: dict[str, Any] = {"v": VERSION, "type": PACKAGE_TYPE, "server": prepared.server(),
                           "spki_sha256": prepared.pin}
    if prepared.reserve_pin is not None:
        out["spki_sha256_reserve"] = prepared.reserve_pin
    out |= {"token": credential.token, "user": content.user, "expires_at": content.expires_at.isoformat(),
            "ca_certificates": [_pem(c) for c in anchors]}
    if credential.identity is not None:
        out["pkcs12"] = _pkcs12(credential.identity, content.user)
    return out


class KesPackageBuilder:
    """The JSON package an Android agent enrolls from."""

    content_type = CONTENT_TYPE
    filename = "enroll-android.json"

    def prepare(self, env: Env) -> KesPrerequisites:
        return check_prerequisites(env)

    def build(self, env: Env, prepared: Prepared, content: ProfileContent) -> bytes:
        if not isinstance(prepared, KesPrerequisites):
            raise TypeError(f"not the KES prerequisites: {prepared!r}")
        return json.dumps(package(prepared, content), indent=2).encode() + b"\n"


def builders() -> ProfileBuilders:
    """The profile builders of a process without the server (``mdm enroll android --file``)."""
    return ProfileBuilders({PLATFORM: KesPackageBuilder()})


async def register_profile_builder(ctx: ServerContext) -> None:
    """Start-up hook; runs after the enrollment plugin's, which creates the registry."""
    ctx.services[PROFILE_BUILDERS].register(PLATFORM, KesPackageBuilder())


PLUGIN = Plugin(name="kes.enrollment", startup=(register_profile_builder,))
