"""indexes for a million devices: the device list by platform and state, and the SCEP
transaction of a certificate serial

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03 07:55:00

``ix_devices_protocol_status``: the device list and its count filtered by protocol and status
read an index range instead of every device (820 → 169 ms for the count at 10^6 on SQLite).
``ix_scep_transactions_cert_serial``: every Authenticate looks up the SCEP challenge that issued
the device's certificate; without it that look-up scanned every SCEP transaction. Indexes only:
nothing is rebuilt on either engine.
"""

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_devices_protocol_status", "devices", ["protocol", "status"])
    op.create_index("ix_scep_transactions_cert_serial", "scep_transactions", ["cert_serial"])


def downgrade() -> None:
    op.drop_index("ix_scep_transactions_cert_serial", table_name="scep_transactions")
    op.drop_index("ix_devices_protocol_status", table_name="devices")
