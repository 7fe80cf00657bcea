"""A large, deterministic organisation for tests and the discovery benchmark (50,000 mailboxes and
100,000 devices in well under five seconds): mailboxes spread over the forest's domains, a few
policies, devices of a handful of real models with EAS DeviceIds of the usual shapes, and about
one phone in a hundred syncing a second mailbox (the same DeviceID, two partnerships).
"""

from __future__ import annotations

import gc
import random
from datetime import datetime, timedelta

from mdm.devfakes.exchange_org_model import DeviceEntry, MailboxEntry, PolicyEntry
from mdm.devfakes.exchange_org_params import default_settings
from mdm.devfakes.exchange_org_store import OrgStore

# (DeviceType, DeviceModel, DeviceOS, DeviceUserAgent, DeviceID prefix)
MODELS = (
    ("iPhone", "iPhone15,2", "iOS 17.1 21B74", "Apple-iPhone15C2/2101.74", "Appl"),
    ("iPhone", "iPhone14,5", "iOS 16.6 20G75", "Apple-iPhone14C5/2006.75", "Appl"),
    ("iPad", "iPad13,4", "iOS 17.0 21A329", "Apple-iPad13C4/2101.329", "Appl"),
    ("SAMSUNGSMS911B", "SM-S911B", "Android 14", "SAMSUNG-SM-S911B/101.140", "SEC"),
    ("Android", "Pixel 8", "Android 14", "Android-Mail/2023.11.05", "androidc"),
    ("Outlook", "Outlook for iOS and Android", "Outlook for iOS and Android 1.0",
     "Outlook-iOS-Android/1.0", ""),
)
STRICT = {
    "DevicePasswordEnabled": True, "MinDevicePasswordLength": 6, "AllowSimpleDevicePassword": False,
    "MaxInactivityTimeDeviceLock": "00:05:00", "MaxDevicePasswordFailedAttempts": "10",
    "RequireDeviceEncryption": True,
}
EXECUTIVES = {"DevicePasswordEnabled": True, "MinDevicePasswordLength": 4,
              "MaxInactivityTimeDeviceLock": "00:15:00"}


def _guid(rng: random.Random) -> str:
    """A random (version 4) GUID's string, without building a ``uuid.UUID`` (50,000 of them)."""
    h = f"{rng.getrandbits(128):032x}"
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"


def _device_id(prefix: str, n: int) -> str:
    # n * an odd constant mod 2**48 is a bijection: unique ids that do not look sequential
    mixed = (n * 0x9E3779B97F4B) & 0xFFFFFFFFFFFF
    if prefix == "":
        return f"{mixed:012X}{n:020X}"  # Outlook: 32 hex digits
    if prefix == "androidc":
        return f"androidc{mixed:015d}"
    return f"{prefix}{mixed:012X}"


def populate(store: OrgStore, now: datetime, *, mailboxes: int, devices: int, seed: int) -> None:
    # Hundreds of thousands of new objects and no garbage: the cyclic collector would only rescan
    # them again and again (it takes more time than building them).
    enabled = gc.isenabled()
    gc.disable()
    try:
        _populate(store, now, mailboxes=mailboxes, devices=devices, seed=seed)
    finally:
        if enabled:
            gc.enable()


def _populate(store: OrgStore, now: datetime, *, mailboxes: int, devices: int, seed: int) -> None:
    rng = random.Random(seed)  # noqa: S311 - deterministic test data, not secrets
    store.add_policy(PolicyEntry("Strict", _guid(rng), False, {**default_settings(), **STRICT}, now))
    store.add_policy(PolicyEntry("Executives", _guid(rng), False,
                                 {**default_settings(), **EXECUTIVES}, now))
    default = store.default_policy().name
    domains = store.domains
    boxes: list[MailboxEntry] = []
    for i in range(mailboxes):
        domain = domains[i % len(domains)]
        name = f"user{i:06d}"
        draw = rng.random()
        policy = "Strict" if draw < 0.10 else "Executives" if draw < 0.15 else None
        mbx = MailboxEntry(
            domain=domain, name=name, display_name=f"User {i:06d}", sam_account_name=name,
            primary_smtp=f"{name}@{domain}", guid=_guid(rng),
            activesync_enabled=rng.random() >= 0.03, policy=policy)
        store.add_mailbox(mbx)
        boxes.append(mbx)
    if not boxes:
        return
    day = 86400
    rand = rng.random  # int(rand() * n): far cheaper than randrange, plenty for test data
    n_boxes, n_models = len(boxes), len(MODELS)
    prev: DeviceEntry | None = None
    for n in range(devices):
        mbx = boxes[int(rand() * n_boxes)]
        kind, model, os, agent, prefix = MODELS[int(rand() * n_models)]
        shown: tuple[str, str | None, str | None, str | None] = (kind, model, os, agent)
        device_id = _device_id(prefix, n)
        if (prev is not None and rand() < 0.01 and prev.mailbox is not mbx
                and prev.key.lower() not in mbx.devices):
            # a phone that also syncs another mailbox: the same DeviceID, a second partnership
            shown = (prev.device_type, prev.model, prev.os, prev.user_agent)
            device_id = prev.device_id
        first_sync = now - timedelta(seconds=day + int(rand() * 699 * day))
        last_sync = max(first_sync, now - timedelta(seconds=int(rand() * 30 * day)))
        prev = DeviceEntry(
            mailbox=mbx, device_id=device_id, device_type=shown[0], model=shown[1], os=shown[2],
            friendly_name=None, imei=None, user_agent=shown[3], first_sync=first_sync,
            last_success_sync=last_sync, last_sync_attempt=last_sync,
            policy_applied=mbx.policy or default)
        store.add_device(prev)
