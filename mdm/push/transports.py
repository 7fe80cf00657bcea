"""The push transports the server runs, built from the configuration at start-up, and the APNs
certificate's life in a running server (renewal on ``mdm reload``, status, expiry warnings).

- APNs for iOS: the MDM push certificate (``mdm.push.identity``) and ``ApnsClient``. The
  self-signed development identity of ``mdm init`` cannot wake a real device, so against Apple's
  gateways it is not used (no pusher: commands wait for the next poll); with ``apns.base_url``
  (a contract fake) it is.
- FCM for Android: the service account and ``FcmClient``.

A renewed certificate with the same topic replaces the client's identity without a restart; the
dispatcher then sends what an open circuit held back.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from mdm.config import Config
from mdm.db.models import Protocol
from mdm.push import sweeps
from mdm.push.apns.client import ApnsClient
from mdm.push.config import apns_config, fcm_config, push_config
from mdm.push.fcm.client import FcmClient
from mdm.push.fcm.oauth import ServiceAccount
from mdm.push.identity import apply_identity, certificate_status, load_identity, record_replaced
from mdm.push.keys import CERTIFICATE_STATUS, DISPATCHER
from mdm.push.topic import TopicError
from mdm.push.types import ApnsIdentity, ProxySettings, PushTransport
from mdm.server.context import ServerContext, ServiceKey

log = logging.getLogger("mdm.push")

APNS_CLIENT = ServiceKey("push.apns_client", ApnsClient)
FCM_CLIENT = ServiceKey("push.fcm_client", FcmClient)
# In the push worker process: the APNs identity the server holds (handed over at the worker's
# start), used instead of the files, which may hold a certificate the server refused on reload.
HANDED_IDENTITY = ServiceKey("push.handed_identity", ApnsIdentity)


def proxy_settings(config: Config) -> ProxySettings | None:
    section = push_config(config)
    if not section.proxy_host:
        return None
    password = section.proxy_password
    if section.proxy_password_file:
        password = config.resolve(section.proxy_password_file).read_text().strip()
    return ProxySettings(section.proxy_host, section.proxy_port, section.proxy_login, password)


async def apns_transport(ctx: ServerContext) -> PushTransport | None:
    section = apns_config(ctx.config)
    identity = ctx.services.get(HANDED_IDENTITY)
    try:
        if identity is None:
            identity = await asyncio.to_thread(load_identity, ctx.config)
    except TopicError as exc:
        log.warning("push: APNs is not started: %s", exc)
        identity = None
    ctx.services[CERTIFICATE_STATUS] = lambda: _certificate_status(ctx)
    if identity is None:
        return None
    if identity.development and not section.base_url:
        log.info("push: the development push identity cannot wake devices through Apple; iOS "
                 "commands wait for the device's next poll")
        return None
    proxy = await asyncio.to_thread(proxy_settings, ctx.config)
    client = ApnsClient(section, identity, proxy=proxy)
    ctx.services[APNS_CLIENT] = client
    return client


async def fcm_transport(ctx: ServerContext) -> PushTransport | None:
    section = fcm_config(ctx.config)
    if not section.service_account_file:
        return None
    account = await asyncio.to_thread(ServiceAccount.load, ctx.config.resolve(section.service_account_file))
    proxy = await asyncio.to_thread(proxy_settings, ctx.config)
    client = FcmClient(section, account, proxy=proxy)
    ctx.services[FCM_CLIENT] = client
    return client


def _identity(ctx: ServerContext) -> ApnsIdentity | None:
    client = ctx.services.get(APNS_CLIENT)
    if client is not None:
        return client.identity
    try:
        return load_identity(ctx.config)
    except TopicError:
        return None


async def _certificate_status(ctx: ServerContext) -> dict[str, Any] | None:
    identity = await asyncio.to_thread(_identity, ctx)
    return certificate_status(identity, datetime.now(UTC), apns_config(ctx.config).environment)


async def _start_apns(ctx: ServerContext) -> None:
    dispatcher = ctx.services.get(DISPATCHER)
    if dispatcher is None:
        return
    transport = await apns_transport(ctx)
    if transport is None:
        return
    dispatcher.add_transport(Protocol.IOS, transport)
    if ctx.pushers.get(Protocol.IOS) is None:
        ctx.pushers.register(Protocol.IOS, dispatcher)
    identity = ctx.services[APNS_CLIENT].identity
    log.info("push: APNs started with topic %s: iOS devices are pushed from now on", identity.topic)
    await record_replaced(ctx.db, None, identity, by="reload")
    await sweeps.recover(dispatcher)  # commands already queued get their wake-up now


async def reload_apns_identity(ctx: ServerContext) -> None:
    """``mdm reload`` with changed ``[apns]`` certificate keys: a renewed certificate with the
    same topic is taken into use at once; another topic is refused and the old one kept."""
    client = ctx.services.get(APNS_CLIENT)
    if client is None:
        await _start_apns(ctx)  # the first usable certificate (e.g. Apple's, after the dev identity)
        return
    current = client.identity
    new = await apply_identity(current, ctx.config, ctx.db)
    if new is None or new is current:
        return
    await client.replace_identity(new)
    await record_replaced(ctx.db, current, new, by="reload")
    dispatcher = ctx.services.get(DISPATCHER)
    if dispatcher is not None:
        await dispatcher.resume(Protocol.IOS)


def worker_handoff(ctx: ServerContext) -> dict[str, Any]:
    """What the push worker process gets from the server besides the configuration: the APNs
    identity the server's client holds (JSON; it travels over the worker's stdin pipe)."""
    client = ctx.services.get(APNS_CLIENT)
    if client is None:
        return {}
    identity = client.identity
    return {"apns_identity": {
        "cert_pem": identity.cert_pem.decode(), "key_pem": identity.key_pem.decode(), "topic": identity.topic,
        "not_after": identity.not_after.isoformat(), "development": identity.development,
    }}


def worker_receive(ctx: ServerContext, handoff: Mapping[str, Any]) -> None:
    """In the worker process, before the transports are built."""
    found = handoff.get("apns_identity")
    if found:
        ctx.services[HANDED_IDENTITY] = ApnsIdentity(
            cert_pem=found["cert_pem"].encode(), key_pem=found["key_pem"].encode(), topic=found["topic"],
            not_after=datetime.fromisoformat(found["not_after"]), development=bool(found["development"]),
        )
