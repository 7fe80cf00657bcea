"""`mdm push status`: what it prints of GET /api/v1/push/status (the shape of mdm.push.schemas)."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from mdm.cli.push_cmd import run_status, status_lines
from mdm.devfakes.certs import identity, make_ca, push_certificate
from mdm.push.identity import certificate_status
from mdm.push.schemas import PushStatus

NOW = datetime.now(UTC)


def status(cert: dict[str, Any] | None) -> dict[str, Any]:
    model = PushStatus.model_validate({
        "owed": 12, "invalid_tokens": 3, "certificate": cert,
        "services": {
            "apns": {"configured": True, "circuit_open": True, "sent": 40,
                     "failures": {"BadCertificate": 1, "TooManyRequests": 4},
                     "last_success_at": (NOW - timedelta(minutes=5)).isoformat()},
            "fcm": {"configured": False, "circuit_open": False, "sent": 0, "failures": {},
                    "last_success_at": None},
        },
    })
    return json.loads(model.model_dump_json())  # type: ignore[no-any-return]


class FakeClient:
    def __init__(self, answer: dict[str, Any]) -> None:
        self.answer = answer
        self.paths: list[str] = []

    def get(self, path: str, **params: Any) -> dict[str, Any]:
        self.paths.append(path)
        return self.answer


def test_status_lines_show_certificate_services_and_counts() -> None:
    ident = identity(push_certificate(make_ca("ca"), days=10))
    text = "\n".join(status_lines(status(certificate_status(ident, NOW, "production"))))
    assert f"topic {ident.topic}" in text and "(10 days left)" in text
    assert "environment: production" in text and "DEVELOPMENT" not in text
    assert "apns: circuit OPEN" in text and "sent 40" in text
    assert "failures: BadCertificate 1, TooManyRequests 4" in text
    assert "fcm: not configured" in text
    assert "owed wake-ups: 12" in text and "invalid push token: 3" in text


def test_status_lines_expired_development_and_none() -> None:
    ident = identity(push_certificate(make_ca("ca"), days=1))
    expired = certificate_status(ident, ident.not_after + timedelta(days=1), "development")
    assert "(EXPIRED)" in "\n".join(status_lines(status(expired)))
    dev = {**certificate_status(ident, NOW), "development": True}
    assert "DEVELOPMENT identity" in "\n".join(status_lines(status(dev)))
    assert "none installed" in status_lines(status(None))[0]
    assert "none installed" in status_lines(status({"configured": False}))[0]


def test_run_status_text_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    answer = status(None)
    client = FakeClient(answer)
    assert run_status(argparse.Namespace(json=True), client) == 0  # type: ignore[arg-type]
    assert json.loads(capsys.readouterr().out) == answer and client.paths == ["/api/v1/push/status"]
    assert run_status(argparse.Namespace(json=False), client) == 0  # type: ignore[arg-type]
    assert "owed wake-ups: 12" in capsys.readouterr().out
