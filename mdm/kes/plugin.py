"""KES identity: the peer resolver (``keys.PEERS``), register, certificate, renewal and unenroll on
the ``kes`` listener. (Filled in by the identity work of issue 13.)"""

from __future__ import annotations

from mdm.server.plugin import Plugin

PLUGIN = Plugin(name="kes")
