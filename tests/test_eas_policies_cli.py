"""``mdm eas policies``: list, show, create, edit and delete ActiveSync mailbox policies through the
admin API, settings typed by ``--set KEY=VALUE``; Exchange's refusals as one clear line."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
from cli_run import mdm_cli
from conftest import listener_url
from eas_commands_support import Switchable, make_runner, seed_from_org

from mdm.cli.eas_policies import SETTINGS
from mdm.config import Config
from mdm.db.engine import Database
from mdm.devfakes.exchange_org import Organisation
from mdm.eas.cmdlets import Naming
from mdm.eas.keys_commands import EXECUTOR, RUNNER
from mdm.eas.records import PolicySettings
from mdm.server.runtime import Server

NAME = 'Field staff "B"; $(whoami)'


def test_the_cli_knows_every_policy_setting_with_its_kind() -> None:
    kinds = {name: ("bool" if "bool" in str(f.annotation) else "int")
             for name, f in PolicySettings.model_fields.items()}
    assert SETTINGS == kinds


@pytest.fixture
async def cli(server: Server, db: Database, config: Config, admin_token: str) -> AsyncIterator[
        tuple[Organisation, list[str]]]:
    org = Organisation(naming=Naming.EXCHANGE_2010)
    runner = Switchable(make_runner(org))
    server.ctx.services[RUNNER] = runner
    await seed_from_org(db, runner)
    await server.ctx.services[EXECUTOR].refresh_policies()
    yield org, ["--url", listener_url(server, "admin"), "--token", admin_token]


async def test_policy_life_cycle_from_the_cli(cli: tuple[Organisation, list[str]], config: Config) -> None:
    org, conn = cli
    code, out, err = await mdm_cli(
        config, "eas", "policies", "create", NAME, "--set", "password_required=true",
        "--set", "min-password-length=6", "--set", "inactivity_lock_seconds=unlimited", *conn)
    assert code == 0, err
    assert NAME in out
    policy = org.policy(NAME)
    assert policy is not None and policy.settings["MinDevicePasswordLength"] == 6
    code, out, err = await mdm_cli(config, "eas", "policies", "show", NAME, "--json", *conn)
    assert code == 0, err
    shown = json.loads(out)
    assert shown["settings"]["password_required"] is True and shown["settings"]["min_password_length"] == 6
    code, out, err = await mdm_cli(config, "eas", "policies", "edit", NAME, "--set", "camera_allowed=false",
                                   *conn)
    assert code == 0, err
    assert "camera_allowed = no" in out
    assert org.policy(NAME).settings["AllowCamera"] is False  # type: ignore[union-attr]
    code, out, err = await mdm_cli(config, "eas", "policies", "list", *conn)
    assert code == 0 and NAME in out and "Default" in out, err
    code, out, err = await mdm_cli(config, "eas", "policies", "delete", NAME, "--yes", *conn)
    assert code == 0, err
    assert org.policy(NAME) is None


async def test_cli_errors_are_one_clear_line(cli: tuple[Organisation, list[str]], config: Config) -> None:
    org, conn = cli
    code, _, err = await mdm_cli(config, "eas", "policies", "create", "X", "--set", "colour=blue", *conn)
    assert code == 2 and "unknown setting" in err
    code, _, err = await mdm_cli(config, "eas", "policies", "create", "X", "--set", "camera_allowed=maybe",
                                 *conn)
    assert code == 2 and "expected true or false" in err
    code, _, err = await mdm_cli(config, "eas", "policies", "edit", "X", *conn)
    assert code == 2 and "nothing to change" in err
    default = next(p.name for p in org.store.policies.values() if p.is_default)
    code, _, err = await mdm_cli(config, "eas", "policies", "delete", default, "--yes", *conn)
    assert code != 0 and "default" in err and "Traceback" not in err
    code, _, err = await mdm_cli(config, "eas", "policies", "show", "Nobody", *conn)
    assert code != 0 and "Nobody" in err
    code, _, err = await mdm_cli(config, "eas", "policies", "delete", "Y", *conn)
    assert code == 2 and "--yes" in err
    assert not [c for c in org.calls if c.name.startswith("New-")]
