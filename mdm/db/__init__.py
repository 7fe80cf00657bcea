"""Storage: SQLAlchemy 2 async engine, tables, Alembic migrations."""
