"""Policies: the resolver (``seams.POLICIES``), the admin API and the CLI's back end.
(Filled in by the policies work of issue 13.)"""

from __future__ import annotations

from mdm.server.plugin import Plugin

PLUGIN = Plugin(name="policies")
