"""KES sync: commands, results, inventory, policy, long poll and wake-ups on the ``kes`` listener.
(Filled in by the sync work of issue 13.)"""

from __future__ import annotations

from mdm.server.plugin import Plugin

PLUGIN = Plugin(name="kes_sync")
