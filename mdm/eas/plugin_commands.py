"""EAS commands and ActiveSync mailbox policy management, wired into the server: the command
translator (``ctx.translators``), the pusher that wakes the executor (``ctx.pushers``), the
executor worker and the policy service. Starts after ``mdm.eas.plugin``, whose runner (when [eas]
is enabled) it finds under ``keys_commands.RUNNER``; without one, EAS commands stay queued and
policy changes answer 503."""

from __future__ import annotations

from mdm.db.models import Protocol
from mdm.eas.commands import EasCommandTranslator
from mdm.eas.config import EasConfig
from mdm.eas.keys_commands import EXECUTOR, POLICIES, PUSHER
from mdm.eas.plugin import current_runner
from mdm.eas.pusher import EasPusher
from mdm.eas.service_commands import CommandExecutor
from mdm.eas.service_policies import PolicyService
from mdm.server.context import ServerContext
from mdm.server.plugin import Plugin, Worker


async def start(ctx: ServerContext) -> None:
    def config() -> EasConfig:
        return ctx.config.section(EasConfig)

    executor = CommandExecutor(ctx.db, lambda: current_runner(ctx), config)
    ctx.services[EXECUTOR] = executor
    ctx.translators.register(Protocol.EAS, EasCommandTranslator(lambda: executor.known_policies))
    pusher = EasPusher(executor.wake)
    ctx.pushers.register(Protocol.EAS, pusher)
    ctx.services[PUSHER] = pusher
    ctx.services[POLICIES] = PolicyService(
        ctx.db, lambda: current_runner(ctx), lambda: config().cmdlet_timeout_seconds,
        changed=executor.refresh_policies,
    )
    await executor.refresh_policies()


async def stop(ctx: ServerContext) -> None:
    pusher = ctx.services.pop(PUSHER)
    if pusher is not None:
        pusher.close()
        ctx.pushers.unregister(Protocol.EAS)
    ctx.translators.unregister(Protocol.EAS)
    ctx.services.pop(POLICIES)
    ctx.services.pop(EXECUTOR)


async def run_executor(ctx: ServerContext) -> None:
    await ctx.services[EXECUTOR].run_forever()


PLUGIN = Plugin(
    name="eas_commands",
    startup=(start,),
    shutdown=(stop,),
    workers=(Worker("eas.commands", run_executor),),
)
