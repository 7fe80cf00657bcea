"""A small JSON control endpoint for a running APNs fake (plain HTTP on 127.0.0.1), so that a
fake started by hand (``mdm dev fake-apns --control-port P``) can be told to misbehave:

    curl -d '{"action": "throttle", "n": 5}' http://127.0.0.1:P/control
    curl http://127.0.0.1:P/stats

Actions: ``unregister`` (token), ``bad_token`` (token), ``throttle`` (n), ``fail`` (n, status),
``refuse`` (reason; "" stops), ``goaway`` (reason), ``drop``, ``stall`` (seconds), ``garbage``
(n), ``reset`` (n).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from mdm.devfakes.apns import FakeApns


def _apply(fake: FakeApns, body: dict[str, Any]) -> None:
    action = body.get("action")
    n = int(body.get("n", 1))
    if action == "unregister":
        fake.unregister(str(body["token"]))
    elif action == "bad_token":
        fake.bad_token(str(body["token"]))
    elif action == "throttle":
        fake.throttle(n)
    elif action == "fail":
        fake.fail(n, int(body.get("status", 500)))
    elif action == "refuse":
        fake.refuse(str(body.get("reason", "BadCertificate")))
    elif action == "goaway":
        fake.goaway(str(body.get("reason", "Shutdown")))
    elif action == "drop":
        fake.drop_connections()
    elif action == "stall":
        fake.stall(float(body.get("seconds", 10)))
    elif action == "garbage":
        fake.garbage(n)
    elif action == "reset":
        fake.reset(n)
    else:
        raise ValueError(f"unknown action {action!r}")


def stats(fake: FakeApns) -> dict[str, Any]:
    return {"accepted": fake.count, "requests": fake.requests, "max_concurrent": fake.max_concurrent,
            "connections": fake.connections_seen, "answers": {str(k): v for k, v in fake.answers.items()}}


async def start_control(fake: FakeApns, port: int, host: str = "127.0.0.1") -> web.AppRunner:
    async def control(request: web.Request) -> web.Response:
        try:
            body = await request.json()
            if not isinstance(body, dict):
                raise ValueError("a JSON object is expected")
            _apply(fake, body)
        except (ValueError, KeyError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response({"ok": True})

    async def get_stats(request: web.Request) -> web.Response:
        return web.json_response(stats(fake))

    app = web.Application()
    app.router.add_post("/control", control)
    app.router.add_get("/stats", get_stats)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
