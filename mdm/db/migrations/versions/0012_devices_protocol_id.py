"""the device list by platform in page order

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03 08:50:00

``ix_devices_protocol_id``: a page filtered by protocol alone reads its rows in id order. With
only ``ix_devices_protocol_status`` SQLite sorted every device of the platform for each page
(49 ms at 10^5 devices, measured by ``mdm bench fleet``). A revision of its own so that databases
already at 0011 get it too. An index only: nothing is rebuilt.
"""

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_devices_protocol_id", "devices", ["protocol", "id"])


def downgrade() -> None:
    op.drop_index("ix_devices_protocol_id", table_name="devices")
