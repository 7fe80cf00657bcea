"""Every feature's configuration section, composed in one place and handed to ``load_config``.

The section models are small pydantic modules that import nothing of their feature, so the CLI
validates the whole file (unknown keys are errors) without loading the server. A new feature adds
its model to ``SECTIONS``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from mdm.adcs.config import AdcsConfig
from mdm.config import Config, Sections
from mdm.config_load import load_config
from mdm.core.bulk_config import BulkConfig
from mdm.eas.config import EasConfig
from mdm.enroll.config import EnrollConfig, SmtpConfig
from mdm.ios.commands_config import IosCommandsConfig
from mdm.ios.config import IosConfig
from mdm.kes.config import KesConfig
from mdm.push.config import ApnsConfig, FcmConfig, PushConfig
from mdm.reporting.config import ReportingConfig
from mdm.scep.settings import ScepConfig

SECTIONS = Sections(
    EnrollConfig, SmtpConfig, ApnsConfig, FcmConfig, PushConfig, IosConfig, IosCommandsConfig, ScepConfig,
    BulkConfig, KesConfig, ReportingConfig, EasConfig, AdcsConfig,
)


def load(
    data_dir: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    require_file: bool = False,
) -> Config:
    """``load_config`` with every feature section of this build."""
    return load_config(data_dir, env, require_file, sections=SECTIONS)
