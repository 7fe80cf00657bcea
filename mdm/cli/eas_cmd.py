"""``mdm eas``: ActiveSync devices managed through Exchange (``docs/eas.md``): discovery,
mailboxes and devices (``eas_devices``), ActiveSync mailbox policies (``eas_policies``)."""

from __future__ import annotations

from mdm.cli import eas_devices, eas_policies
from mdm.cli.api_cmd import actions
from mdm.cli.common import Subparsers


def register(sub: Subparsers) -> None:
    eas = actions(sub, "eas", "Exchange ActiveSync: discovery, mailboxes, devices, mailbox policies")
    eas_devices.register(eas)
    eas_policies.register(eas)
