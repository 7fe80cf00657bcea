"""The data of the fake Exchange organisation and its look-ups, as Exchange resolves an
``-Identity``: a mailbox by its identity (``domain/Users/name``), name (alias), primary SMTP
address, SamAccountName (also ``DOMAIN\\sam``), GUID or distinguished name; a device by its
identity (``<mailbox identity>/ExchangeActiveSyncDevices/<type>§<id>``); a policy by name or GUID.
Several matches are an ambiguous identity, none is "couldn't be found"; without a forest-wide view
only the current (first) domain's mailboxes are visible.

Not thread-safe by itself: ``exchange_org.Organisation`` holds one lock around every use.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from mdm.devfakes.exchange_org_model import (
    DEVICES_CONTAINER,
    DeviceEntry,
    ExchangeFault,
    MailboxEntry,
    PolicyEntry,
)
from mdm.devfakes.exchange_org_params import ambiguous, not_found

DEFAULT_POLICY = "Default"


def low(text: str) -> str:
    """``text`` lower-cased, the same object when it already is (keys kept for 100,000s of
    objects should not double every string)."""
    lowered = text.lower()
    return text if lowered == text else lowered


class OrgStore:
    def __init__(self, domains: tuple[str, ...]) -> None:
        if not domains:
            raise ValueError("an organisation needs at least one domain")
        self.domains = tuple(d.lower() for d in domains)
        self.current_domain = self.domains[0]
        self.mailboxes: dict[str, MailboxEntry] = {}  # identity lower-cased -> mailbox
        # every other key a mailbox is found by -> the mailbox, or a list when several share it
        self._index: dict[str, MailboxEntry | list[MailboxEntry]] = {}
        self.devices_by_id: dict[str, list[DeviceEntry]] = {}  # DeviceID lower-cased
        self.policies: dict[str, PolicyEntry] = {}  # name lower-cased

    # ---- mailboxes --------------------------------------------------------------------------

    @staticmethod
    def _keys(mbx: MailboxEntry) -> Iterator[str]:
        yield low(mbx.name)
        yield low(mbx.primary_smtp)
        yield low(mbx.sam_account_name)
        yield low(mbx.guid)

    def add_mailbox(self, mbx: MailboxEntry) -> None:
        key = low(mbx.identity)
        if key in self.mailboxes:
            raise ValueError(f"mailbox {mbx.identity} exists")
        if mbx.domain not in self.domains:
            raise ValueError(f"domain {mbx.domain} is not in the forest {self.domains}")
        self.mailboxes[key] = mbx
        for k in set(self._keys(mbx)):
            found = self._index.get(k)
            if found is None:
                self._index[k] = mbx
            elif isinstance(found, list):
                found.append(mbx)
            else:
                self._index[k] = [found, mbx]

    def remove_mailbox(self, mbx: MailboxEntry) -> None:
        for dev in list(mbx.devices.values()):
            self.remove_device(dev)
        del self.mailboxes[mbx.identity.lower()]
        for k in set(self._keys(mbx)):
            found = self._index.get(k)
            if isinstance(found, list):
                rest = [m for m in found if m is not mbx]
                self._index[k] = rest[0] if len(rest) == 1 else rest
            elif found is mbx:
                del self._index[k]

    def visible(self, mbx: MailboxEntry, forest: bool) -> bool:
        return forest or mbx.domain == self.current_domain

    def _candidates(self, identity: str) -> list[MailboxEntry]:
        key = identity.strip().lower()
        exact = self.mailboxes.get(key)
        if exact is not None:
            return [exact]
        if key.startswith("cn=") and ",cn=users," in key:
            return [m for m in self.mailboxes.values() if m.distinguished_name.lower() == key]
        if "\\" in key:  # DOMAIN\sam
            netbios, _, sam = key.partition("\\")
            found = self._index.get(sam)
            items = found if isinstance(found, list) else [found] if found is not None else []
            return [m for m in items if m.sam_account_name.lower() == sam
                    and m.domain.split(".")[0] == netbios]
        found = self._index.get(key)
        if found is None:
            return []
        return list(found) if isinstance(found, list) else [found]

    def find_mailbox(self, cmdlet: str, identity: str, *, forest: bool) -> MailboxEntry:
        matches = [m for m in self._candidates(identity) if self.visible(m, forest)]
        if not matches:
            raise not_found(cmdlet, identity)
        if len(matches) > 1:
            raise ambiguous(cmdlet, identity)
        return matches[0]

    def get_mailbox(self, identity: str) -> MailboxEntry | None:
        """A test hook: the mailbox by any identity, forest-wide; None when absent or ambiguous."""
        matches = self._candidates(identity)
        return matches[0] if len(matches) == 1 else None

    # ---- devices ----------------------------------------------------------------------------

    def add_device(self, dev: DeviceEntry) -> None:
        key = low(dev.key)
        if key in dev.mailbox.devices:
            raise ValueError(f"device {dev.identity} exists")
        dev.mailbox.devices[key] = dev
        dev.mailbox.has_partnership = True
        self.devices_by_id.setdefault(low(dev.device_id), []).append(dev)

    def remove_device(self, dev: DeviceEntry) -> None:
        dev.mailbox.devices.pop(dev.key.lower(), None)
        same = self.devices_by_id.get(dev.device_id.lower(), [])
        rest = [d for d in same if d is not dev]
        if rest:
            self.devices_by_id[dev.device_id.lower()] = rest
        else:
            self.devices_by_id.pop(dev.device_id.lower(), None)

    def find_device(self, cmdlet: str, identity: str, *, forest: bool) -> DeviceEntry:
        mailbox_part, sep, key = identity.strip().rpartition(DEVICES_CONTAINER)
        if not sep or not key:
            raise not_found(cmdlet, identity)
        try:
            mbx = self.find_mailbox(cmdlet, mailbox_part, forest=forest)
        except ExchangeFault:
            raise not_found(cmdlet, identity) from None
        dev = mbx.devices.get(key.lower())
        if dev is None:
            raise not_found(cmdlet, identity)
        return dev

    def get_device(self, identity: str) -> DeviceEntry | None:
        """A test hook: the device by its identity, forest-wide."""
        try:
            return self.find_device("Get-ActiveSyncDeviceStatistics", identity, forest=True)
        except ExchangeFault:
            return None

    def devices(self) -> Iterator[DeviceEntry]:
        for same in self.devices_by_id.values():
            yield from same

    # ---- policies ---------------------------------------------------------------------------

    def add_policy(self, policy: PolicyEntry) -> None:
        if policy.name.lower() in self.policies:
            raise ValueError(f"policy {policy.name} exists")
        self.policies[policy.name.lower()] = policy

    def default_policy(self) -> PolicyEntry:
        for policy in self.policies.values():
            if policy.is_default:
                return policy
        raise RuntimeError("the organisation has no default ActiveSync mailbox policy")

    def find_policy(self, cmdlet: str, identity: str) -> PolicyEntry:
        key = identity.strip().lower()
        policy = self.policies.get(key)
        if policy is not None:
            return policy
        for candidate in self.policies.values():
            if candidate.guid.lower() == key:
                return candidate
        raise not_found(cmdlet, identity)

    def rename_policy(self, policy: PolicyEntry, new_name: str) -> None:
        del self.policies[policy.name.lower()]
        old = policy.name
        policy.name = new_name
        self.policies[new_name.lower()] = policy
        for mbx in self.mailboxes.values():
            if mbx.policy == old:
                mbx.policy = new_name

    def remove_policy(self, policy: PolicyEntry) -> None:
        del self.policies[policy.name.lower()]
        for mbx in self.mailboxes.values():  # their mailboxes fall back to the default
            if mbx.policy == policy.name:
                mbx.policy = None

    def stats(self) -> dict[str, Any]:
        return {"mailboxes": len(self.mailboxes), "devices": sum(1 for _ in self.devices()),
                "policies": len(self.policies)}
