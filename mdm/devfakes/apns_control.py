"""A small JSON control endpoint for a running APNs fake (plain HTTP on 127.0.0.1), so that a
fake started by hand (``mdm dev fake-apns --control-port P``) can be told to misbehave:

    curl -d '{"action": "throttle", "n": 5}' http://127.0.0.1:P/control
    curl http://127.0.0.1:P/stats
    curl -d '{"action": "watch", "tokens": ["ab12..."]}' http://127.0.0.1:P/control
    curl 'http://127.0.0.1:P/woken?after=0'   # the watched tokens pushed since the n-th

Actions: ``unregister`` (token), ``bad_token`` (token), ``throttle`` (n), ``fail`` (n, status),
``refuse`` (reason; "" stops), ``goaway`` (reason), ``drop``, ``stall`` (seconds), ``garbage``
(n), ``reset`` (n), ``watch`` (tokens: list the accepted pushes to them at ``/woken``).
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
    elif action == "watch":
        tokens = body.get("tokens")
        if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
            raise ValueError("watch needs tokens: a list of strings")
        fake.watch(tokens)
    else:
        raise ValueError(f"unknown action {action!r}")


def stats(fake: FakeApns) -> dict[str, Any]:
    return {"accepted": fake.count, "requests": fake.requests, "max_concurrent": fake.max_concurrent,
            "connections": fake.connections_seen, "answers": {str(k): v for k, v in fake.answers.items()},
            "fast_requests": fake.fast_requests}


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

    async def get_woken(request: web.Request) -> web.Response:
        try:
            after = int(request.query.get("after", "0"))
            limit = int(request.query.get("limit", "10000"))
        except ValueError:
            return web.json_response({"error": "after and limit are integers"}, status=400)
        after, limit = max(0, after), min(max(1, limit), 100_000)
        tokens = fake.woken[after:after + limit]
        return web.json_response({"tokens": tokens, "next": after + len(tokens), "total": len(fake.woken)})

    app = web.Application()
    app.router.add_post("/control", control)
    app.router.add_get("/stats", get_stats)
    app.router.add_get("/woken", get_woken)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
