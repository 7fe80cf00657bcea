"""Admin API of KES devices (location, mugshots, agent state)."""

from __future__ import annotations

from mdm.api.framework import ApiRouter

router = ApiRouter()  # joined into the admin API by mdm.plugins
