"""Every table module, imported so that ``metadata`` is complete (migrations, drift test).

A composition module like ``mdm.plugins``: it sits above the features (``mdm.db`` must not import
them). A package that adds tables adds its module here and an Alembic revision under
``mdm/db/migrations/versions``.
"""

from mdm.db import models
from mdm.db.models import Base
from mdm.eas import tables as eas_tables  # noqa: F401
from mdm.enroll import tables as enroll_tables  # noqa: F401
from mdm.ios import tables as ios_tables  # noqa: F401
from mdm.kes import tables as kes_tables  # noqa: F401
from mdm.pki import tables as pki_tables
from mdm.policies import tables as policies_tables  # noqa: F401
from mdm.push import tables as push_tables  # noqa: F401
from mdm.reporting import tables as reporting_tables  # noqa: F401
from mdm.scep import tables as scep_tables  # noqa: F401

__all__ = ["metadata", "models", "pki_tables"]

metadata = Base.metadata
