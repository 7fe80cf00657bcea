"""Admin REST API on the admin listener (13299): /api/v1, OpenAPI, health, metrics."""
