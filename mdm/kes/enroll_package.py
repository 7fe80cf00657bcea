"""The Android enrollment package: the ``ProfileBuilder`` of platform ``"android"``.
(Filled in by the enrollment work of issue 13.)"""

from __future__ import annotations

from mdm.server.plugin import Plugin

PLUGIN = Plugin(name="kes_enroll_package")
