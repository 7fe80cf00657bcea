"""The ``certificates`` light: the CA, the server certificates the listeners serve, and the
certificates issued to devices and users.

- red: the root or issuing CA certificate, or the certificate of a slot a listener serves, has
  expired or expires within ``red_days`` (7 days);
- yellow: a certificate request has been pending at an enterprise CA for over a day, or one of
  them expires within ``yellow_days`` (30 days), or ``device_threshold`` (50) or
  more valid issued certificates expire within ``red_days`` (the renewal sweep is not keeping up:
  devices that do not renew in time are cut off);
- green otherwise.

The CA certificates are in memory; the slots' files are read in a thread (a handful of small
files); the issued certificates are counted up to the threshold along an index.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from mdm.core.status import AreaStatus, Light
from mdm.db.models import utcnow
from mdm.pki import store_status as store
from mdm.pki.ca import CertificateAuthority
from mdm.pki.slots import LISTENER_SLOT, load_slot_certificate


def _slot_expiries(certs_dir: Path, slots: Iterable[str]) -> dict[str, datetime | str]:
    """Each slot's certificate expiry, or what prevents reading it."""
    found: dict[str, datetime | str] = {}
    for slot in slots:
        try:
            found[slot] = load_slot_certificate(certs_dir, slot).not_valid_after_utc
        except (OSError, ValueError, IndexError) as exc:
            found[slot] = f"unreadable: {exc}"
    return found


class CertificatesSource:
    area = "certificates"

    def __init__(
        self,
        ca: Callable[[], CertificateAuthority],
        certs_dir: Path,
        listeners: Callable[[], Iterable[str]],
        *,
        red_days: int = 7,
        yellow_days: int = 30,
        device_threshold: int = 50,
    ) -> None:
        self.ca = ca
        self.certs_dir = certs_dir
        self.listeners = listeners
        self.red_days = red_days
        self.yellow_days = yellow_days
        self.device_threshold = device_threshold

    async def status(self, session: AsyncSession) -> AreaStatus:
        now = utcnow()
        authority = self.ca()
        expiries: dict[str, datetime | str] = {
            "root CA": authority.root.not_valid_after_utc,
            "issuing CA": authority.issuing.not_valid_after_utc,
        }
        slots = sorted({LISTENER_SLOT[name] for name in self.listeners() if name in LISTENER_SLOT})
        for slot, value in (await asyncio.to_thread(_slot_expiries, self.certs_dir, slots)).items():
            expiries[f"server certificate {slot}"] = value
        red_before = now + timedelta(days=self.red_days)
        expiring = await store.valid_expiring_upto(session, now, red_before, self.device_threshold)
        details: dict[str, Any] = {
            "not_after": {name: v.isoformat() if isinstance(v, datetime) else v
                          for name, v in expiries.items()},
            "issued_expiring_within_days": self.red_days,
            "issued_expiring": expiring if expiring < self.device_threshold else f"{self.device_threshold}+",
        }
        red: list[str] = []
        yellow: list[str] = []
        for name, value in expiries.items():
            if isinstance(value, str):
                red.append(f"the {name} is {value}")
            elif value <= now:
                red.append(f"the {name} expired on {value:%Y-%m-%d}")
            elif value < red_before:
                red.append(f"the {name} expires on {value:%Y-%m-%d %H:%M} UTC")
            elif value < now + timedelta(days=self.yellow_days):
                yellow.append(f"the {name} expires on {value:%Y-%m-%d} ({(value - now).days} days)")
        stale = await store.pending_requests_upto(session, now - timedelta(days=1), self.device_threshold)
        details["requests_pending_over_a_day"] = stale
        if stale:
            yellow.append(f"{stale}{'+' if stale >= self.device_threshold else ''} certificate request(s) "
                          "pending at an enterprise CA for over a day (GET /api/v1/certificates/requests)")
        if expiring >= self.device_threshold:
            yellow.append(f"{self.device_threshold} or more issued certificates expire within "
                          f"{self.red_days} days (is renewal working?)")
        if red:
            return AreaStatus(self.area, Light.RED, "; ".join(red + yellow), details)
        if yellow:
            return AreaStatus(self.area, Light.YELLOW, "; ".join(yellow), details)
        return AreaStatus(self.area, Light.GREEN, None, details)
