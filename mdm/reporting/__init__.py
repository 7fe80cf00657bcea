"""Reporting to the core server: the outbox delivery worker and its transports (DESIGN.md §10)."""
