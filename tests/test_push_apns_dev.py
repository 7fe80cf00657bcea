"""`mdm dev fake-apns` and the fake's JSON control endpoint."""

from __future__ import annotations

import argparse
from pathlib import Path

import httpx
from apns_support import apns_env, target
from ports import free_port

from mdm.cli import dev_cmd
from mdm.devfakes.apns_control import start_control
from mdm.push.types import Outcome


def test_dev_fake_apns_arguments(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser(prog="mdm")
    dev_cmd.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["dev", "fake-apns", "--port", "0", "--cert-dir", str(tmp_path),
                              "--control-port", "9"])
    assert args.func is dev_cmd.run_fake_apns and args.port == 0 and args.control_port == 9


async def test_control_endpoint_drives_the_fake(tmp_path: Path) -> None:
    async with apns_env(tmp_path) as env:
        port = free_port()
        runner = await start_control(env.fake, port)
        client = env.client()
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
                answer = await http.post("/control", json={"action": "fail", "n": 1, "status": 503})
                assert answer.json() == {"ok": True}
                assert (await client.send(target())).reason == "ServiceUnavailable"
                assert (await client.send(target())).outcome is Outcome.SENT
                bad = await http.post("/control", json={"action": "explode"})
                assert bad.status_code == 400 and "explode" in bad.json()["error"]
                stats = (await http.get("/stats")).json()
                assert stats["accepted"] == 1 and stats["answers"] == {"503": 1, "200": 1}
        finally:
            await client.close()
            await runner.cleanup()


async def test_watched_tokens_are_listed_once_per_accepted_push(tmp_path: Path) -> None:
    async with apns_env(tmp_path) as env:
        port = free_port()
        runner = await start_control(env.fake, port)
        client = env.client()
        watched, other = "ab" * 32, "cd" * 32
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
                assert (await http.post("/control", json={"action": "watch", "tokens": [watched.upper()]})
                        ).json() == {"ok": True}
                bad = await http.post("/control", json={"action": "watch", "tokens": "x"})
                assert bad.status_code == 400 and "list" in bad.json()["error"]
                env.fake.unregister(watched)
                assert (await client.send(target(watched))).outcome is Outcome.INVALID_TOKEN
                env.fake.controls.unregistered.clear()
                for token in (watched, other, watched):
                    assert (await client.send(target(token))).outcome is Outcome.SENT
                first = (await http.get("/woken", params={"after": 0})).json()
                assert first == {"tokens": [watched, watched], "next": 2, "total": 2}
                assert (await http.get("/woken", params={"after": 2})).json()["tokens"] == []
                assert (await http.get("/woken", params={"after": "x"})).status_code == 400
        finally:
            await client.close()
            await runner.cleanup()
