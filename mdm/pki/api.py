"""TRANSITIONAL (issue 10): the admin API of the PKI now lives in ``mdm.pki.handlers``; this
name stays until ``mdm.plugins`` imports ``mdm.pki.handlers.router``."""

from __future__ import annotations

from mdm.pki.handlers import router

__all__ = ["router"]
