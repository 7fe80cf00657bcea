"""Admin API of policies: ``/api/v1/policies`` (filled in by the policies work of issue 13)."""

from __future__ import annotations

from mdm.api.framework import ApiRouter

router = ApiRouter()  # joined into the admin API by mdm.plugins
