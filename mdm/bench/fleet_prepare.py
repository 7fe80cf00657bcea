"""A prepared fleet of N enrolled iOS devices for ``mdm bench fleet``, written straight to the
service's tables (no HTTP enrollment): per device the rows a real Authenticate + TokenUpdate leave
(``devices`` with facts, topic, push token and magic; ``ios_devices`` with the identity binding
and the unlock token) and the issued-certificate record of its own certificate, signed by the
server's CA (``CertificateAuthority.issue``, as ``pki.issuance`` does for a mobile identity).

Device keys come from a shared pool (``bench/fleet-keys.pem``, 64 keys): every device still has
its own certificate, but only the devices the simulator drives need a private key, and any of
them can be rebuilt from the pool and its certificate record. Certificates are signed in a
process pool (one worker per core) while the main process writes the previous batch; each batch
of ``BATCH`` devices is one transaction, so a run stopped halfway resumes where it stopped and a
re-run of a complete data directory writes nothing. Identifiers are ``0000F1EE-<index, 16 hex
digits>``: contiguous, so that how far a directory is prepared is one count on an index.

Not written: the events of a real enrollment (``device_enrolled``, ``push_token_updated``,
``cert_issued``), which would flood the outbox and its consumer with millions of rows.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import multiprocessing
import os
import random
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any, Literal

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from mdm.bench import store_fleet
from mdm.bench.batches import init_signer, sign_certificates, signed_batches
from mdm.config import Config
from mdm.db.engine import Database
from mdm.db.models import DeviceStatus, Protocol, utcnow
from mdm.ios.inventory import os_name_for
from mdm.pki.keys import PrivateKey, generate_key
from mdm.pki.tables import CertStatus, CertType
from mdm.sim.facts import HardwareFacts
from mdm.sim.fleet import Member
from mdm.sim.identity import Identity

KeyType = Literal["ec", "rsa"]
CHIP = "0000F1EE"
FIRST, LAST = f"{CHIP}-{0:016X}", f"{CHIP}-{16**16 - 1:016X}"
BATCH = 5_000  # devices per transaction (three tables: ~15,000 rows)
POOL = 64
GROUP = "bench fleet"  # every GROUP_EVERY-th device is in it (GET /devices?group=)
GROUP_EVERY = 10
FLEET_TABLES = ("devices", "ios_devices", "certificates", "groups")
KEYS_FILE = "bench/fleet-keys.pem"
STATE_FILE = "bench/fleet.json"


class FleetPrepareError(Exception):
    pass


def udid(index: int) -> str:
    return f"{CHIP}-{index:016X}"


def index_of(identifier: str) -> int:
    return int(identifier.split("-", 1)[1], 16)


def facts(index: int) -> HardwareFacts:
    """The hardware facts of fleet device ``index`` (the same on every call)."""
    f = HardwareFacts.generate(random.Random(index))  # noqa: S311 - simulation data
    f.udid = udid(index)
    f.device_id = str(uuid.UUID(int=(0xF1EE << 112) | index)).upper()  # the PushMagic
    return f


def push_token(identifier: str) -> str:
    """The token ``mdm.sim.fleet.Fleet.check_in`` sends in TokenUpdate, as the server stores it."""
    return identifier.encode().ljust(32, b"\0")[:32].hex()


def unlock_token(identifier: str) -> bytes:
    return hashlib.sha256(b"unlock:" + identifier.encode()).digest()


# ---- the key pool ---------------------------------------------------------------------------------


def _key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def key_pool(config: Config, key_type: KeyType = "rsa") -> list[PrivateKey]:
    """The pool's keys, generated on first use (``bench/fleet-keys.pem``, mode 0600)."""
    path = config.data_path / KEYS_FILE
    if not path.exists():
        keys = [generate_key(key_type) for _ in range(POOL)]
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path.with_suffix(".tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(b"".join(_key_pem(k) for k in keys))
        os.replace(path.with_suffix(".tmp"), path)
    keys = []
    for block in path.read_bytes().split(b"-----END PRIVATE KEY-----")[:-1]:
        loaded = serialization.load_pem_private_key(block + b"-----END PRIVATE KEY-----\n", None,
                                                    unsafe_skip_rsa_key_validation=True)
        if not isinstance(loaded, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
            raise FleetPrepareError(f"{path}: unexpected key type {type(loaded).__name__}")
        keys.append(loaded)
    return keys


# ---- certificates, signed in worker processes (mdm.bench.batches) -------------------------------------


def _bench_name(index: int) -> str:
    return f"bench {udid(index)}"


def _rows(signed: list[tuple[int, str, str, bytes, datetime, datetime, str]], topic: str,
          group_id: int, now: datetime) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    devices, certificates = [], []
    for i, serial, subject, _, not_before, not_after, pem in signed:
        f = facts(i)
        attributes: dict[str, Any] = {"model_name": f.model_name, "model_number": f.model, "topic": topic}
        if f.meid:
            attributes["meid"] = f.meid
        devices.append({
            "protocol": Protocol.IOS.value, "identifier": f.udid, "user_id": None,
            "group_id": group_id if i % GROUP_EVERY == 0 else None, "name": f.device_name,
            "model": f.product_name, "os_name": os_name_for(f.product_name, f.os_version),
            "os_version": f.os_version, "build_version": f.build_version, "serial_number": f.serial_number,
            "imei": f.imei or None, "phone_number": None, "status": DeviceStatus.OK.value,
            "supported_commands": 0, "enrolled_at": now, "last_seen_at": now,
            "push_token": push_token(f.udid), "push_magic": f.device_id, "push_valid": True,
            "push_changed_at": now, "cert_serial": serial, "cert_not_after": not_after,
            "inventory": {}, "attributes": attributes,
        })
        certificates.append({
            "serial": serial, "type": CertType.MOBILE.value, "subject": subject, "user_id": None,
            "source": "internal", "status": CertStatus.VALID.value, "not_before": not_before,
            "not_after": not_after, "issued_at": now, "pem": pem,
        })
    return devices, certificates


# ---- preparation ---------------------------------------------------------------------------------------


@dataclass
class Prepared:
    devices: int
    added: int
    seconds: float
    key_type: str


async def prepare(
    config: Config,
    devices: int,
    *,
    topic: str,
    key_type: KeyType = "rsa",
    workers: int | None = None,
    batch: int = BATCH,
    progress: Callable[[int], None] | None = None,
) -> Prepared:
    """Make the data directory's fleet ``devices`` strong (resuming a partial one); refuses to
    shrink one prepared for more devices."""
    t0 = time.perf_counter()
    state_path = config.data_path / STATE_FILE
    state = json.loads(state_path.read_text()) if state_path.exists() else {}
    key_type = state.get("key_type", key_type)
    db = Database(config.database_url, 2)
    try:
        async with db.session() as session:
            have = await store_fleet.count_in_range(session, FIRST, LAST)
        if have > devices:
            raise FleetPrepareError(
                f"{config.data_path} holds a fleet of {have} devices, more than the {devices} asked for: "
                "use the same --devices or another --data-dir"
            )
        if have == devices:
            return Prepared(devices, 0, round(time.perf_counter() - t0, 1), key_type)
        pool = await asyncio.to_thread(key_pool, config, key_type)
        state_path.parent.mkdir(parents=True, exist_ok=True)
        state_path.write_text(json.dumps({"key_type": key_type, "topic": topic}))
        async with db.transaction() as session:
            group = await store_fleet.group_id(session, GROUP) or await store_fleet.add_group(session, GROUP)
        publics = [k.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo) for k in pool]
        init = (str(config.ca_dir), config.ca_passphrase(), publics)
        missing = devices - have
        count = workers if workers is not None else (0 if missing < 2 * batch else (os.cpu_count() or 1))
        executor: Executor | None = None
        if count > 0:
            executor = ProcessPoolExecutor(count, mp_context=multiprocessing.get_context("spawn"),
                                           initializer=init_signer, initargs=init)
        else:
            init_signer(*init)
        try:
            await _write(db, executor, have, devices, batch, topic, group, count, progress)
        finally:
            if executor is not None:
                executor.shutdown(cancel_futures=True)
        async with db.session() as session:  # fresh planner statistics for the bulk-loaded tables
            await store_fleet.analyze(session, FLEET_TABLES)
            await session.commit()
        return Prepared(devices, missing, round(time.perf_counter() - t0, 1), key_type)
    finally:
        await db.close()


async def vacuum(config: Config, tables: Sequence[str]) -> tuple[float, bool] | None:
    """PostgreSQL: ``VACUUM (ANALYZE)`` the tables a run writes, then a ``CHECKPOINT``, before the
    server starts, so that runs on a reused fleet start alike (this machine's autovacuum is off:
    the removed commands and dead queue rows of every earlier run stayed in the tables and their
    indexes; and the first run after the preparation had its WAL to write back). The seconds it
    took and whether the checkpoint was allowed; None on SQLite (its tables keep no dead
    versions to clean)."""
    db = Database(config.database_url, 1)
    try:
        if db.is_sqlite:
            return None
        t0 = time.perf_counter()
        async with db.engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            await store_fleet.vacuum(conn, tables)
            checkpointed = await store_fleet.checkpoint(conn)
        return round(time.perf_counter() - t0, 1), checkpointed
    finally:
        await db.close()


async def _write(db: Database, executor: Executor | None, have: int, devices: int, batch: int, topic: str,
                 group: int, workers: int, progress: Callable[[int], None] | None) -> None:
    done = have
    # bounded: a few batches signed ahead, never the fleet
    sign = partial(sign_certificates, _bench_name)
    async for signed in signed_batches(executor, sign, have, devices, batch, workers):
        now = utcnow()
        device_rows, cert_rows = _rows(signed, topic, group, now)
        async with db.transaction() as session:
            ids = await store_fleet.insert_devices(session, device_rows)
            for (i, *_), row in zip(signed, cert_rows, strict=True):
                row["device_id"] = ids[udid(i)]
            await store_fleet.insert_certificates(session, cert_rows)
            await store_fleet.insert_ios_devices(session, [
                {"device_id": ids[udid(i)], "cert_fingerprint": fingerprint, "cert_not_before": not_before,
                 "topic": topic, "unlock_token": unlock_token(udid(i)), "bootstrap_token": None,
                 "bootstrap_token_at": None, "awaiting_configuration": False, "bound_at": now,
                 "updated_at": now, "last_signed_at": None}
                for i, _, _, fingerprint, not_before, _, _ in signed
            ])
        done += len(signed)
        if progress:
            progress(done - have)


# ---- the devices the simulator drives ----------------------------------------------------------------


async def driven_members(config: Config, count: int) -> list[Member]:
    """The first ``count`` fleet devices as simulator members (key from the pool, certificate from
    its record, the server's device id)."""
    pool = await asyncio.to_thread(key_pool, config)
    chain = x509.load_pem_x509_certificates((config.ca_dir / "issuing.pem").read_bytes())
    db = Database(config.database_url, 2)
    try:
        async with db.session() as session:
            rows = await store_fleet.driven(session, FIRST, LAST, count)
    finally:
        await db.close()
    members = []
    for row in rows:
        i = index_of(row.identifier)
        cert = x509.load_pem_x509_certificate(row.pem.encode())
        members.append(Member(facts(i), Identity(pool[i % len(pool)], cert, chain[:1]), row.device_id))
    return members
