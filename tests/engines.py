"""Which engine this test process runs on (scripts/test runs the whole suite on SQLite, then on
PostgreSQL with ``MDM_TEST_DATABASE_URL`` set)."""

from __future__ import annotations

import os

import pytest

ON_POSTGRES = bool(os.environ.get("MDM_TEST_DATABASE_URL"))
# For modules that touch no database: they run once, in the SQLite pass.
ENGINE_FREE = pytest.mark.skipif(ON_POSTGRES, reason="no database: runs once, under SQLite")
