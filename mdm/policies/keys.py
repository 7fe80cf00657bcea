"""Typed keys of the policies services the admin API handlers read (the resolver the platforms
read is ``seams.POLICIES``)."""

from __future__ import annotations

from mdm.policies.service import PolicyService
from mdm.policies.service_devices import DeviceService
from mdm.server.context import ServiceKey

SERVICE = ServiceKey("policies.service", PolicyService)
DEVICES = ServiceKey("policies.devices", DeviceService)
