"""Alembic environment: always run with a connection handed over by ``mdm.db.migrate``."""

from alembic import context

from mdm.db.migrate import unmodelled
from mdm.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - offline/CLI use is not supported
    raise RuntimeError("run migrations through `mdm init` / `mdm serve` (mdm.db.migrate.upgrade)")

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
    include_name=unmodelled,
)
with context.begin_transaction():
    context.run_migrations()
