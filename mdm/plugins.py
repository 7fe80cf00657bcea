"""The composition root: every feature of this build, in start-up order, handed to the runtime.

Nothing registers itself on import. A new feature builds its ``Plugin`` in its ``plugin.py`` and
is added here (and its configuration section in ``mdm.config_sections``). The PKI comes first: its
start-up loads the CA and builds every listener's TLS context, which the others use.
"""

from __future__ import annotations

import sys

from mdm.adcs.source import adcs_source
from mdm.api import plugin as api_plugin
from mdm.api.keys import BULK
from mdm.config_reload import hot
from mdm.core.bulk import BulkService
from mdm.db.enums import Protocol
from mdm.eas import handlers_api as eas_api
from mdm.eas import handlers_policies as eas_policies_api
from mdm.eas import plugin as eas_plugin
from mdm.eas import plugin_commands as eas_commands_plugin
from mdm.enroll import handlers_api as enroll_api
from mdm.enroll import plugin as enroll_plugin
from mdm.ios import enroll_profiles as ios_enroll_profiles
from mdm.ios import plugin as ios_plugin
from mdm.kes import enroll_package as kes_enroll_package
from mdm.kes import handlers_api as kes_api
from mdm.kes import plugin as kes_plugin
from mdm.kes import plugin_sync as kes_sync_plugin
from mdm.pki import handlers as pki_api
from mdm.pki import plugin as pki_plugin
from mdm.pki.sources import DEFAULT_SOURCES
from mdm.policies import handlers_api as policies_api
from mdm.policies import plugin as policies_plugin
from mdm.push import handlers_api as push_api
from mdm.push import plugin as push_plugin
from mdm.push import transports
from mdm.push.assembly import WorkerSetup
from mdm.push.expiry import check_at_start, expiry_worker
from mdm.push.supervisor import WorkerCommand
from mdm.reporting import handlers_api as reporting_api
from mdm.reporting import plugin as reporting_plugin
from mdm.scep import handlers_api as scep_api
from mdm.scep import plugin as scep_plugin
from mdm.server.plugin import Plugin, Worker

# The admin API document covers every feature's routes.
ADMIN_API = api_plugin.admin_api(
    pki_api.router, scep_api.router, enroll_api.router, push_api.router, policies_api.router, kes_api.router,
    reporting_api.router, eas_api.router, eas_policies_api.router,
)

# Push: APNs wakes iOS devices, FCM Android ones; the APNs certificate is renewed on `mdm reload`
# and warned about before it expires.
PUSH_TRANSPORTS = {Protocol.IOS: transports.apns_transport, Protocol.KES: transports.fcm_transport}
# `[push] worker = "process"`: the dispatcher's worker in a process of its own (`mdm serve
# --push-worker`, started by the server), with the same transports, the APNs identity the server
# holds, and the bulk receipts over its own database (only `accepted` is used there).
PUSH_WORKER = WorkerSetup(
    PUSH_TRANSPORTS,
    receipts=lambda ctx: BulkService(ctx.db, ctx.translators, ctx.pushers),
    receive=transports.worker_receive,
)
PUSH = push_plugin.make_plugin(
    PUSH_TRANSPORTS,
    extra_startup=(check_at_start,),
    extra_workers=(Worker("push.expiry", expiry_worker),),
    # The certificate keys are hot, and the files are re-read at every reload: `mdm push apns
    # set-cert` writes a renewed certificate over the old one, under the same names.
    extra_hot=(hot("apns.certificate_file", "apns.key_file"),),
    extra_reload=(transports.reload_apns_identity,),
    # Accepted pushes of a bulk operation's wake-ups count as "woken" on the operation (the admin
    # API, which builds the bulk service, starts before push).
    receipts=lambda ctx: ctx.services[BULK],
    worker_command=WorkerCommand((sys.executable, "-m", "mdm", "serve", "--push-worker"),
                                 handoff=transports.worker_handoff),
)

# The certificate sources issuance rules may name: the internal CA and AD CS web enrollment.
PKI = pki_plugin.make_plugin(sources={**DEFAULT_SOURCES, "adcs": adcs_source})

PLUGINS: tuple[Plugin, ...] = (
    PKI,
    api_plugin.plugin(ADMIN_API),
    PUSH,  # before the platforms: it registers their pushers
    scep_plugin.PLUGIN,
    enroll_plugin.PLUGIN,  # before every platform: it holds the registry of profile builders
    policies_plugin.PLUGIN,  # before KES: it holds the policy resolver the sync reads
    ios_enroll_profiles.PLUGIN,
    ios_plugin.PLUGIN,
    kes_enroll_package.PLUGIN,
    kes_plugin.PLUGIN,  # the peer resolver, before the sync that authenticates with it
    kes_sync_plugin.PLUGIN,
    eas_plugin.PLUGIN,  # the Exchange runner ([eas] enabled) and discovery
    eas_commands_plugin.PLUGIN,  # EAS commands and policies; after mdm.eas.plugin (the runner)
    reporting_plugin.PLUGIN,  # last: the transport's client certificate comes from the PKI
)
