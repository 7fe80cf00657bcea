"""Certificates signed in worker processes a few batches ahead of the database writes (the fleet and
KES preparations): bounded, so never the whole fleet in memory."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization

from mdm.pki.ca import CertificateAuthority

CERT_DAYS = 365
# (index, serial hex, subject, fingerprint, not before, not after, PEM) per device.
Signed = tuple[int, str, str, bytes, datetime, datetime, str]

_worker: dict[str, Any] = {}


def init_signer(ca_dir: str, passphrase: bytes | None, public_pems: list[bytes]) -> None:
    """Load the CA and the shared public keys once per worker process (or inline)."""
    _worker["ca"] = CertificateAuthority.load(Path(ca_dir), passphrase)
    _worker["keys"] = [serialization.load_pem_public_key(p) for p in public_pems]


def sign_certificates(name: Callable[[int], str], start: int, stop: int) -> list[Signed]:
    """A client certificate for devices ``start..stop-1``, named ``name(i)``, each with a key of the
    shared pool (``functools.partial`` of this with a module-level ``name`` is what the pool runs)."""
    ca: CertificateAuthority = _worker["ca"]
    keys = _worker["keys"]
    out: list[Signed] = []
    for i in range(start, stop):
        cert = ca.issue(keys[i % len(keys)], common_name=name(i), days=CERT_DAYS, client=True)
        out.append((
            i, format(cert.serial_number, "x"), cert.subject.rfc4514_string(),
            cert.fingerprint(hashes.SHA256()), cert.not_valid_before_utc, cert.not_valid_after_utc,
            cert.public_bytes(serialization.Encoding.PEM).decode(),
        ))
    return out


async def signed_batches(
    executor: Executor | None, sign: Callable[[int, int], list[Any]], have: int, devices: int,
    size: int, ahead: int,
) -> AsyncIterator[list[Any]]:
    """``sign(start, stop)`` for each batch of ``size`` in ``[have, devices)``, in order, with at most
    ``ahead + 1`` batches signing at once (inline when there is no executor). ``sign`` must be a
    module-level function (it is pickled to the worker processes)."""
    loop = asyncio.get_running_loop()
    starts = iter(range(have, devices, size))
    pending: list[asyncio.Future[list[Any]]] = []

    def submit() -> None:
        start = next(starts, None)
        if start is None:
            return
        stop = min(devices, start + size)
        if executor is None:
            future: asyncio.Future[list[Any]] = loop.create_future()
            future.set_result(sign(start, stop))
        else:
            future = asyncio.wrap_future(executor.submit(sign, start, stop))
        pending.append(future)

    for _ in range(max(1, ahead) + 1):
        submit()
    while pending:
        signed = await pending.pop(0)
        submit()
        yield signed
