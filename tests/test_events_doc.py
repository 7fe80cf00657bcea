"""docs/events.md is the event catalog rendered from the code (``python -m mdm.events_doc``): it
fails here when stale, every declared type has an example, and every event the issue asks for
(issue 14, item 1) exists under the name mapped below."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mdm import events_doc
from mdm.core.events import EventType

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "events.md"

# The issue's concepts -> the declared type that reports each (an existing type that covers a
# concept says so in its description).
ISSUE_CONCEPTS: dict[str, str] = {
    "enrollment: link created": "enrollment_created",
    "enrollment: link downloaded": "enrollment_downloaded",
    "enrollment: link expired": "enrollment_expired",
    "enrollment: device enrolled (iOS)": "device_enrolled",
    "enrollment: device enrolled (Android)": "kes_device_enrolled",
    "enrollment: device checked out (iOS CheckOut)": "device_unenrolled",
    "enrollment: device unenrolled (Android)": "kes_device_unenrolled",
    "device: inventory updated (iOS)": "inventory_updated",
    "device: inventory updated (Android)": "kes_inventory_updated",
    "device: status changed": "device_status_changed",
    "device: wiped (iOS)": "device_wiped",
    "device: wiped (Android)": "kes_device_wiped",
    "device: location": "kes_location_updated",
    "device: last-seen summary": "devices_seen",
    "command: queued": "command_created",
    "command: queued in bulk": "commands_created",
    "command: delivered": "command_delivered",
    "command: completed": "command_completed",
    "command: failed": "command_failed",
    "command: recalled": "command_recalled",
    "command: bulk operation progress": "bulk_operation_progress",
    "push: failure by reason": "push_failures_aggregated",
    "push: token invalidated": "push_token_invalid",
    "push: certificate expiring": "push_certificate_expiring",
    "push: certificate expired": "push_certificate_expired",
    "push: certificate renewed": "push_certificate_replaced",
    "certificates: issued": "cert_issued",
    "certificates: renewed": "cert_renewed",
    "certificates: revoked": "cert_revoked",
    "certificates: expiring": "cert_expiring",
    "certificates: server certificate replaced": "server_cert_replaced",
    "policy: changed": "policy_updated",
    "policy: applied by a device": "policy_applied",
    "security: identity rejected (iOS)": "security_identity_rejected",
    "security: identity rejected (Android)": "security_kes_identity_rejected",
    "security: bad signature (iOS: in security_identity_rejected)": "security_identity_rejected",
    "security: replayed message": "security_message_rejected",
    "security: token reuse": "security_token_reused",
    "security: certificate refused (TLS handshake)": "security_kes_handshake_rejected",
    "service: started": "service_started",
    "service: stopped": "service_stopped",
    "service: listener failure": "listener_failed",
    "service: core link down": "core_link_down",
    "service: core link up": "core_link_up",
    "audit: administrator action": "admin_action",
}


def test_the_committed_catalog_is_up_to_date() -> None:
    problem = events_doc.check(DOC, events_doc.render())
    assert problem is None, problem


def test_every_declared_type_has_a_valid_example_and_is_in_the_document() -> None:
    catalog = events_doc.load_catalog()
    assert len(catalog) >= 80
    missing = [name for name, (kind, _) in catalog.items() if kind.example is None]
    assert missing == [], f"event types without an example: {missing}"
    for name, (kind, module) in catalog.items():
        kind.body.model_validate(kind.example)
        assert module.startswith("mdm.") and module.rsplit(".", 1)[-1].startswith("event_types"), name
        assert events_doc.area_of(name, module) != "other", name
    text = events_doc.render(catalog)
    for name in catalog:
        assert f"\n### {name}\n" in text and f"(#{name})" in text


def test_every_event_the_issue_names_is_declared() -> None:
    events_doc.load_catalog()
    absent = {concept: name for concept, name in ISSUE_CONCEPTS.items() if name not in EventType.declared}
    assert absent == {}


def test_a_type_renders_its_fields_severity_and_example() -> None:
    catalog = events_doc.load_catalog()
    section = events_doc._section(*catalog["bulk_operation_progress"])
    assert "Severity `info`" in section and "declared in `mdm/core/event_types.py`" in section
    assert "| `percent` | integer | yes | The step crossed: 25, 50 or 75" in section
    example = section.split("```json\n", 1)[1].split("\n```", 1)[0]
    assert json.loads(example) == catalog["bulk_operation_progress"][0].example
    optional = events_doc._section(*catalog["device_enrolled"])
    assert "| `serial_number` | string or null | no |" in optional
    assert events_doc.render(catalog) == events_doc.render(catalog)  # deterministic


def test_check_exits_1_with_the_fix_when_stale(tmp_path: Path) -> None:
    stale = tmp_path / "events.md"
    stale.write_text(events_doc.render().replace("service_started", "service_begun", 1))
    run = subprocess.run([sys.executable, "-m", "mdm.events_doc", "--check", str(stale)],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert run.returncode == 1
    assert "is stale" in run.stderr and "python -m mdm.events_doc > docs/events.md" in run.stderr
    fresh = tmp_path / "fresh.md"
    fresh.write_text(events_doc.render())
    assert events_doc.main(["--check", str(fresh)]) == 0
    assert events_doc.main(["--check", str(tmp_path / "absent.md")]) == 1


@pytest.mark.parametrize("name", ["service_started", "devices_seen", "security_token_reused"])
def test_new_types_sit_in_their_area(name: str) -> None:
    catalog = events_doc.load_catalog()
    _kind, module = catalog[name]
    assert events_doc.area_of(name, module) == {
        "service_started": "service", "devices_seen": "device", "security_token_reused": "security",
    }[name]


def test_types_declared_outside_the_catalog_modules_are_not_documented() -> None:
    """Tests declare types of their own in the same process (a renewer's half-done event): the
    document lists the catalog modules' types only, whatever ran before it in the process."""
    from mdm.core.events import EventBody
    from mdm.db.enums import Severity

    stray = EventType("doc_test_stray", Severity.INFO, EventBody, "declared by a test")
    assert EventType.declared["doc_test_stray"] is stray
    assert "doc_test_stray" not in events_doc.load_catalog()
    assert "doc_test_stray" not in events_doc.render()
