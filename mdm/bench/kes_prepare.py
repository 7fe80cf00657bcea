"""N enrolled KES devices for ``mdm bench kes``, written straight to the service's tables (no
register/certificate round trips): per device the rows a real enrollment leaves (``devices``
protocol 2 with its facts, owner and push token; ``kes_devices`` bound to the fingerprint of its
own certificate; the issued-certificate record), the certificate signed by the server's CA as
``pki.issuance`` does for a ``mobile`` identity.

Keys come from the shared pool of ``fleet_prepare`` (``bench/fleet-keys.pem``, EC P-256 here):
every device has its own certificate, only the devices the load generator drives need a key.
Certificates are signed in a process pool when there are many; each batch is one transaction, so
a stopped run resumes and a re-run of a complete data directory writes nothing. Android ids are
``be5c<index, 12 hex digits>``: contiguous, so how far a directory is prepared is one count.
Not written: the events of a real enrollment (they would flood the outbox).
"""

from __future__ import annotations

import asyncio
import hashlib
import multiprocessing
import os
import time
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from mdm.bench import store_kes as kes_store
from mdm.bench.batches import init_signer, sign_certificates, signed_batches
from mdm.bench.fleet_prepare import key_pool
from mdm.config import Config
from mdm.db.engine import Database
from mdm.db.models import DeviceStatus, Protocol, utcnow
from mdm.pki.tables import CertStatus, CertType
from mdm.sim.identity import Identity

PREFIX = "be5c"
FIRST, LAST = f"{PREFIX}{0:012x}", f"{PREFIX}{16**12 - 1:012x}"
BATCH = 2_000
USER = "bench-kes"


class KesPrepareError(Exception):
    pass


def android_id(index: int) -> str:
    return f"{PREFIX}{index:012x}"


def fcm_token(index: int) -> str:
    return f"bench{index:012x}:APA91b" + hashlib.sha256(android_id(index).encode()).hexdigest()


@dataclass
class Prepared:
    devices: int
    added: int
    seconds: float


async def prepare(config: Config, devices: int, *, workers: int | None = None,
                  progress: Callable[[int], None] | None = None) -> Prepared:
    """Make the data directory hold ``devices`` enrolled KES devices (resuming a partial run)."""
    t0 = time.perf_counter()
    db = Database(config.database_url, 2)
    try:
        async with db.session() as session:
            have = await kes_store.count_in_range(session, FIRST, LAST)
        if have > devices:
            raise KesPrepareError(f"{config.data_path} holds {have} KES bench devices, more than the "
                                  f"{devices} asked for: use the same --devices or another --data-dir")
        if have == devices:
            return Prepared(devices, 0, round(time.perf_counter() - t0, 1))
        pool = await asyncio.to_thread(key_pool, config, "ec")
        async with db.transaction() as session:
            owner = await kes_store.user_id(session, USER) or await kes_store.add_user(
                session, USER, "bench-kes@example.com")
        publics = [k.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo) for k in pool]
        init = (str(config.ca_dir), config.ca_passphrase(), publics)
        missing = devices - have
        count = workers if workers is not None else (0 if missing < 2 * BATCH else (os.cpu_count() or 1))
        executor: Executor | None = None
        if count > 0:
            executor = ProcessPoolExecutor(count, mp_context=multiprocessing.get_context("spawn"),
                                           initializer=init_signer, initargs=init)
        else:
            init_signer(*init)
        try:
            await _write(db, executor, have, devices, owner, max(1, count), progress)
        finally:
            if executor is not None:
                executor.shutdown(cancel_futures=True)
        return Prepared(devices, missing, round(time.perf_counter() - t0, 1))
    finally:
        await db.close()


async def _write(db: Database, executor: Executor | None, have: int, devices: int, owner: int, ahead: int,
                 progress: Callable[[int], None] | None) -> None:
    done = have
    sign = partial(sign_certificates, android_id)
    async for signed in signed_batches(executor, sign, have, devices, BATCH, ahead):
        now = utcnow()
        async with db.transaction() as session:
            ids = await kes_store.insert_devices(session, [_device_row(i, serial, not_after, owner, now)
                                                           for i, serial, _, _, _, not_after, _ in signed])
            await kes_store.insert_certificates(session, [
                {"serial": serial, "type": CertType.MOBILE.value, "subject": subject, "user_id": owner,
                 "device_id": ids[android_id(i)], "source": "internal", "status": CertStatus.VALID.value,
                 "not_before": nb, "not_after": na, "issued_at": now, "pem": pem}
                for i, serial, subject, _, nb, na, pem in signed])
            await kes_store.insert_kes_devices(session, [
                {"device_id": ids[android_id(i)], "enrollment_id": None, "cert_fingerprint": fp,
                 "agent_version": "11.110.4.1234", "registered_at": now, "bound_at": now, "updated_at": now}
                for i, _, _, fp, _, _, _ in signed])
        done += len(signed)
        if progress:
            progress(done - have)


def _device_row(i: int, serial: str, not_after: datetime, owner: int, now: datetime) -> dict[str, Any]:
    return {
        "protocol": Protocol.KES.value, "identifier": android_id(i), "user_id": owner, "group_id": None,
        "name": f"Pixel 8 ({i})", "model": "Pixel 8", "os_name": "Android", "os_version": "14",
        "build_version": None, "serial_number": f"BK{i:09d}", "imei": None, "phone_number": None,
        "status": DeviceStatus.OK.value, "supported_commands": 0, "enrolled_at": now, "last_seen_at": now,
        "push_token": fcm_token(i), "push_magic": None, "push_valid": True, "push_changed_at": now,
        "cert_serial": serial, "cert_not_after": not_after, "inventory": {}, "attributes": {},
    }


async def driven(config: Config, count: int) -> list[tuple[int, Identity]]:
    """The first ``count`` devices as (server device id, identity: pool key + its certificate)."""
    pool = await asyncio.to_thread(key_pool, config, "ec")
    chain = x509.load_pem_x509_certificates((config.ca_dir / "issuing.pem").read_bytes())
    db = Database(config.database_url, 2)
    try:
        async with db.session() as session:
            rows = await kes_store.driven(session, FIRST, LAST, count)
    finally:
        await db.close()
    out = []
    for row in rows:
        i = int(row.identifier[len(PREFIX):], 16)
        out.append((row.device_id, Identity(pool[i % len(pool)], x509.load_pem_x509_certificate(
            row.pem.encode()), chain[:1])))
    return out
