"""The ``[ios_commands]`` configuration section (kept apart from the translator so that loading
the configuration does not import it)."""

from __future__ import annotations

from pydantic import ConfigDict

from mdm.config import Section

SECTION = "ios_commands"


class IosCommandsConfig(Section):
    model_config = ConfigDict(extra="forbid")
    name = SECTION

    # Sign InstallConfProf profiles with the `ios` certificate unless the command says otherwise
    # (args.sign). Profiles travel over the authenticated MDM channel, so signing is optional.
    sign_profiles: bool = False

