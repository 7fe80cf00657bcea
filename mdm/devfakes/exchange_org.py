"""An in-memory Exchange organisation: the behaviour behind the Exchange contract fake.

``Organisation.execute(name, params, principal=..., session=...)`` runs one cmdlet as the Exchange
Management Shell's remote endpoint would: by its 2010 name, or on an ``EXCHANGE_2013`` organisation
also by its 2013+ name; RBAC hides a cmdlet the principal may not run (CommandNotFoundException,
as Exchange does); parameters are bound like PowerShell binds them and used verbatim; failures are
``ExchangeFault`` error records with Exchange's ids and categories. The PSRP wire fake
(``exchange_psrp``) calls it from several threads: one lock guards all state.

The forest has one or more domains; the first is the current one, and without
``Set-AdServerSettings -ViewEntireForest $true`` (per runspace: ``SessionState``) only its
mailboxes are visible. Wiping is as in Exchange: Clear-ActiveSyncDevice makes the device
wipe-pending; at its next sync (``device_syncs``, a test hook for the phone) the wipe is sent and
acknowledged, and the device stays listed, and is wiped again at every sync, until
Remove-ActiveSyncDevice.

Tests and benchmarks steer it with ``inject`` (the next call(s) of a cmdlet fail), ``delay`` (they
take longer), ``add_*``/``drop_*`` (mailboxes and devices appear and vanish) and read ``calls``
(every cmdlet as it arrived) to assert that values reached Exchange as plain values.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from mdm.devfakes.exchange_org_cmdlets import HANDLERS, Ctx
from mdm.devfakes.exchange_org_generate import populate
from mdm.devfakes.exchange_org_model import (
    Call,
    DeviceEntry,
    ExchangeFault,
    MailboxEntry,
    PolicyEntry,
    PSOut,
    SessionState,
)
from mdm.devfakes.exchange_org_params import command_not_found, default_settings
from mdm.devfakes.exchange_org_store import DEFAULT_POLICY, OrgStore
from mdm.eas.cmdlets import Naming, logical_name, modern_name

__all__ = ["Call", "ExchangeFault", "Organisation", "PSOut", "SessionState"]

_SILENT = frozenset({"silentlycontinue", "ignore"})
_BINDING_ERRORS = ("System.Management.Automation.ParameterBinding",)


class Organisation:
    """See the module docstring. ``permissions``: principal -> the logical (2010) names it may
    run, or None for every cmdlet (Get-Command is always there)."""

    def __init__(self, *, naming: Naming = Naming.EXCHANGE_2013,
                 domains: tuple[str, ...] = ("corp.example.com",),
                 permissions: dict[str, set[str]] | None = None,
                 clock: Callable[[], datetime] | None = None, record_calls: bool = True) -> None:
        self.naming = naming
        self.permissions = permissions
        self.store = OrgStore(domains)
        self.calls: list[Call] = []
        self.record_calls = record_calls
        self._clock = clock or (lambda: datetime.now(UTC))
        self._lock = threading.RLock()
        self._faults: dict[str, list[ExchangeFault]] = {}
        self._delays: dict[str, list[float]] = {}
        self.store.add_policy(PolicyEntry(DEFAULT_POLICY, str(uuid.uuid4()), True, default_settings()))
        names: dict[str, str] = {}  # lower-cased name as sent -> canonical name
        for logical in HANDLERS:
            names[logical.lower()] = logical
            if naming is Naming.EXCHANGE_2013:
                names[modern_name(logical).lower()] = modern_name(logical)
        self._names = names

    @property
    def lock(self) -> threading.RLock:
        return self._lock

    def now(self) -> datetime:
        return self._clock()

    # ---- running cmdlets --------------------------------------------------------------------

    def _permitted(self, principal: str, logical: str) -> bool:
        if self.permissions is None or logical == "Get-Command":
            return True
        allowed = self.permissions.get(principal)
        if allowed is None:
            allowed = next((v for k, v in self.permissions.items() if k.lower() == principal.lower()),
                           set())
        return logical in allowed

    def commands_for(self, principal: str) -> list[str]:
        """The cmdlet names this principal's session has (what Get-Command can find)."""
        return [name for name in self._names.values() if self._permitted(principal, logical_name(name))]

    def execute(self, name: str, params: Mapping[str, Any], *, principal: str,
                session: SessionState) -> list[PSOut]:
        """Run one cmdlet; raise ``ExchangeFault`` for the error record it would write."""
        received = dict(params)
        with self._lock:
            if self.record_calls:
                self.calls.append(Call(principal, name, received))
            canonical = self._names.get(name.strip().lower())
            logical = logical_name(canonical) if canonical else None
            if canonical is None or logical is None or not self._permitted(principal, logical):
                raise command_not_found(name)
            delays = self._delays.get(logical)
            pause = delays.pop(0) if delays else 0.0
        if pause:
            time.sleep(pause)  # outside the lock: other runspaces go on meanwhile
        with self._lock:
            faults = self._faults.get(logical)
            if faults:
                raise faults.pop(0)
            ctx = Ctx(self.store, canonical, canonical != logical, session, self.now(),
                      self.commands_for(principal))
            try:
                return HANDLERS[logical](ctx, received)
            except ExchangeFault as fault:
                action = next((str(v) for k, v in received.items() if str(k).lower() == "erroraction"), "")
                if action.lower() in _SILENT and not fault.exception_type.startswith(_BINDING_ERRORS):
                    return []
                raise

    # ---- fault injection --------------------------------------------------------------------

    def inject(self, cmdlet: str, fault: ExchangeFault, times: int = 1) -> None:
        """The next ``times`` calls of ``cmdlet`` (logical or 2013 name) write ``fault``."""
        with self._lock:
            self._faults.setdefault(logical_name(cmdlet), []).extend([fault] * times)

    def delay(self, cmdlet: str, seconds: float, times: int = 1) -> None:
        """The next ``times`` calls of ``cmdlet`` take ``seconds`` longer (before they run)."""
        with self._lock:
            self._delays.setdefault(logical_name(cmdlet), []).extend([seconds] * times)

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()
            self._delays.clear()

    # ---- test hooks: the organisation changes behind the service's back ---------------------

    def add_mailbox(self, name: str, *, domain: str | None = None, display_name: str | None = None,
                    smtp: str | None = None, sam: str | None = None, activesync_enabled: bool = True,
                    policy: str | None = None, guid: str | None = None) -> str:
        """A new mailbox; returns its identity. ``policy`` None: the default applies."""
        with self._lock:
            dom = (domain or self.store.current_domain).lower()
            if policy is not None:
                policy = self.store.find_policy("Set-CASMailbox", policy).name
            mbx = MailboxEntry(
                domain=dom, name=name, display_name=display_name or name,
                sam_account_name=sam or name[:20], primary_smtp=smtp or f"{name}@{dom}",
                guid=guid or str(uuid.uuid4()), activesync_enabled=activesync_enabled, policy=policy)
            self.store.add_mailbox(mbx)
            return mbx.identity

    def add_device(self, mailbox: str, device_id: str, *, device_type: str = "iPhone",
                   model: str | None = "iPhone15,2", os: str | None = "iOS 17.1 21B74",
                   friendly_name: str | None = None, imei: str | None = None,
                   user_agent: str | None = "Apple-iPhone15C2/2101.74",
                   first_sync: datetime | None = None, last_sync: datetime | None = None) -> str:
        """A device partnership for ``mailbox`` (any identity form); returns its identity."""
        with self._lock:
            mbx = self.store.get_mailbox(mailbox)
            if mbx is None:
                raise KeyError(f"no mailbox {mailbox!r}")
            now = self.now()
            dev = DeviceEntry(
                mailbox=mbx, device_id=device_id, device_type=device_type, model=model, os=os,
                friendly_name=friendly_name, imei=imei, user_agent=user_agent,
                first_sync=first_sync or now, last_success_sync=last_sync or now,
                last_sync_attempt=last_sync or now,
                policy_applied=mbx.policy or self.store.default_policy().name)
            self.store.add_device(dev)
            return dev.identity

    def drop_device(self, identity: str) -> bool:
        """The partnership vanishes (removed by someone else); False if there was none."""
        with self._lock:
            dev = self.store.get_device(identity)
            if dev is None:
                return False
            self.store.remove_device(dev)
            return True

    def drop_mailbox(self, identity: str) -> bool:
        """The mailbox (and its partnerships) vanishes; False if there was none."""
        with self._lock:
            mbx = self.store.get_mailbox(identity)
            if mbx is None:
                return False
            self.store.remove_mailbox(mbx)
            return True

    def add_policy(self, name: str, settings: Mapping[str, Any] | None = None, *,
                   is_default: bool = False) -> None:
        """A policy with settings by their 2010 parameter names (stored forms, see
        ``exchange_org_params.convert_setting``)."""
        with self._lock:
            policy = PolicyEntry(name, str(uuid.uuid4()), False, {**default_settings(), **(settings or {})},
                                 self.now())
            self.store.add_policy(policy)
            if is_default:
                for other in self.store.policies.values():
                    other.is_default = other is policy

    def device_syncs(self, device_id: str) -> int:
        """The phone with this EAS DeviceId syncs (each of its partnerships): a wipe-pending or
        wiped device gets the wipe (again) and acknowledges it; any other just syncs. A mailbox
        with ActiveSync switched off refuses the device: only its attempt is recorded (and a
        pending wipe is not delivered). Returns how many partnerships synced."""
        with self._lock:
            now = self.now()
            devices = list(self.store.devices_by_id.get(device_id.lower(), ()))
            for dev in devices:
                dev.last_sync_attempt = now
                if not dev.mailbox.activesync_enabled:
                    continue
                if dev.wipe_requested is not None:
                    dev.wipe_sent = now
                    dev.wipe_ack = now
                else:
                    dev.last_success_sync = now
                    dev.policy_applied = dev.mailbox.policy or self.store.default_policy().name
            return sum(1 for dev in devices if dev.mailbox.activesync_enabled)

    # ---- read access for tests --------------------------------------------------------------

    def mailbox(self, identity: str) -> MailboxEntry | None:
        with self._lock:
            return self.store.get_mailbox(identity)

    def device(self, identity: str) -> DeviceEntry | None:
        with self._lock:
            return self.store.get_device(identity)

    def policy(self, name: str) -> PolicyEntry | None:
        with self._lock:
            return self.store.policies.get(name.lower())

    def counts(self) -> dict[str, Any]:
        with self._lock:
            return self.store.stats()

    @classmethod
    def generate(cls, *, mailboxes: int, devices: int, seed: int = 0,
                 domains: tuple[str, ...] = ("corp.example.com",),
                 naming: Naming = Naming.EXCHANGE_2013, record_calls: bool = True) -> Organisation:
        """A deterministic organisation of ``mailboxes`` mailboxes (spread over ``domains``) and
        ``devices`` device partnerships (about 1% of them a phone syncing a second mailbox)."""
        org = cls(naming=naming, domains=domains, record_calls=record_calls)
        with org.lock:
            populate(org.store, org.now(), mailboxes=mailboxes, devices=devices, seed=seed)
        return org
