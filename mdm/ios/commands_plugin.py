"""Registers the iOS command translator, its ``[ios_commands]`` configuration section and, at
start-up, the ``ios`` slot certificate as the signer of configuration profiles."""

from __future__ import annotations

from mdm.config_reload import hot
from mdm.core.library import register_translator
from mdm.db.models import Protocol
from mdm.ios.commands import IosCommandTranslator, SlotSigner
from mdm.ios.commands_config import SECTION, IosCommandsConfig
from mdm.server import registry
from mdm.server.context import ServerContext

TRANSLATOR = IosCommandTranslator()
register_translator(Protocol.IOS, TRANSLATOR)


@registry.startup_hook
async def configure_signing(ctx: ServerContext) -> None:
    section = ctx.config.extensions.get(SECTION)
    settings = section if isinstance(section, IosCommandsConfig) else IosCommandsConfig()
    TRANSLATOR.configure_signing(SlotSigner(ctx.config.certs_dir), by_default=settings.sign_profiles)


hot(f"{SECTION}.sign_profiles", apply=configure_signing)  # mdm reload


@registry.shutdown_hook
async def unconfigure_signing(ctx: ServerContext) -> None:
    TRANSLATOR.configure_signing(None, by_default=False)
