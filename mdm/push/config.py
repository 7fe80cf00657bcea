"""The ``[apns]`` configuration section.

Enrollment only needs the push certificate (its subject UID is the MDM ``Topic`` written into
profiles); the APNs pusher may extend the section with its key and endpoint.
"""

from __future__ import annotations

from pydantic import ConfigDict

from mdm.config import Config, Section


class ApnsConfig(Section):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True)
    name = "apns"

    # The MDM push certificate (PEM); its subject UID is the topic written into profiles.
    certificate_file: str = ""


def apns_config(config: Config) -> ApnsConfig:
    return config.section(ApnsConfig)
