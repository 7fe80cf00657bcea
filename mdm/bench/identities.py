"""Device identities for the benchmark, issued in bulk through the service layer and cached.

Each simulated device gets its own certificate from the internal CA via ``pki.issuance.issue``
(recorded and evented like any issued certificate), in batches of a few hundred per transaction.
Keys are ECDSA P-256 by default (microseconds each); RSA-2048 is available with a small pool of
keys shared between certificates, because generating 10,000 RSA keys takes minutes on two cores.
Identities (and, once checked in, the server's device ids) are kept in
``DATA_DIR/bench/devices.jsonl`` (mode 0600) so later runs skip issuance and check-in.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from mdm.config import Config
from mdm.db.engine import Database
from mdm.pki.ca import CertificateAuthority
from mdm.pki.issuance import CertificateRequest, InternalCASource, issue
from mdm.pki.keys import PrivateKey, generate_key
from mdm.pki.tables import CertType
from mdm.sim.facts import HardwareFacts
from mdm.sim.fleet import Member
from mdm.sim.identity import Identity

KeyType = Literal["ec", "rsa"]
BATCH = 250
CACHE = "bench/devices.jsonl"


def cache_path(config: Config) -> Path:
    return config.data_path / CACHE


def _key_pem(key: PrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def load(path: Path, chain: list[x509.Certificate]) -> list[Member]:
    members: list[Member] = []
    if not path.exists():
        return members
    keys: dict[str, PrivateKey] = {}  # the RSA pool: 64 keys shared by many certificates
    for line in path.read_text().splitlines():
        row = json.loads(line)
        key = keys.get(row["key"])
        if key is None:
            # Keys this benchmark generated itself: skip OpenSSL's slow RSA consistency check.
            loaded = serialization.load_pem_private_key(
                row["key"].encode(), None, unsafe_skip_rsa_key_validation=True
            )
            if not isinstance(loaded, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
                raise ValueError(f"{path}: unexpected key type {type(loaded).__name__}")
            key = keys[row["key"]] = loaded
        cert = x509.load_pem_x509_certificate(row["cert"].encode())
        facts = HardwareFacts.generate(random.Random(row["seed"]))  # noqa: S311
        members.append(Member(facts, Identity(key, cert, chain), row.get("device_id")))
    return members


def save(path: Path, members: list[Member], seeds: list[int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        for member, seed in zip(members, seeds, strict=True):
            fh.write(
                json.dumps(
                    {
                        "seed": seed,
                        "udid": member.udid,
                        "device_id": member.device_id,
                        "key": _key_pem(member.identity.key),
                        "cert": member.identity.certificate.public_bytes(serialization.Encoding.PEM).decode(),
                    }
                )
                + "\n"
            )
    os.replace(tmp, path)


def seeds_of(path: Path) -> list[int]:
    if not path.exists():
        return []
    return [int(json.loads(line)["seed"]) for line in path.read_text().splitlines()]


async def issue_bulk(
    config: Config,
    count: int,
    *,
    key_type: KeyType = "ec",
    rsa_pool: int = 64,
    first_seed: int = 0,
    progress: Callable[[int], None] | None = None,
) -> list[Member]:
    """``count`` new members with certificates issued through the service layer."""
    ca = await asyncio.to_thread(CertificateAuthority.load, config.ca_dir, config.ca_passphrase())
    source = InternalCASource(ca)
    if key_type == "rsa":
        pool = await asyncio.gather(*(asyncio.to_thread(generate_key, "rsa", 2048) for _ in range(rsa_pool)))
    db = Database(config.database_url, config.database.pool_size)
    members: list[Member] = []
    try:
        for start in range(0, count, BATCH):
            async with db.transaction() as session:
                for i in range(start, min(count, start + BATCH)):
                    facts = HardwareFacts.generate(random.Random(first_seed + i))  # noqa: S311
                    key = pool[i % len(pool)] if key_type == "rsa" else generate_key("ec")
                    issued = await issue(
                        session,
                        source,
                        CertificateRequest(
                            type=CertType.MOBILE,
                            common_name=f"bench {facts.udid}",
                            days=30,
                            public_key=key.public_key(),
                        ),
                    )
                    members.append(Member(facts, Identity(key, issued.certificate, list(ca.chain[:1]))))
            if progress:
                progress(len(members))
    finally:
        await db.close()
    return members
