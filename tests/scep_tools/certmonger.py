"""Runs Debian's certmonger daemon as an external SCEP client, in its own process and state dirs.

certmonger generates the key, builds the PKCSReq (its own CMS code on OpenSSL), talks to the
server through its ``scep-submit`` helper, verifies our CertRep and writes the certificate. The
daemon is started with a private listening socket (no D-Bus) and exits when ``getcert`` does.
A CA record written before start-up carries certmonger's ``scep_cipher`` / ``scep_digest``
fields, which is how it is made to send 3DES or SHA-1 instead of its AES/SHA-256 default.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

CERTMONGER = shutil.which("certmonger") or "/usr/sbin/certmonger"
HELPERS = ("/usr/lib/certmonger/scep-submit", "/usr/libexec/certmonger/scep-submit")


def scep_submit() -> str | None:
    return next((h for h in HELPERS if os.access(h, os.X_OK)), None)


def available() -> bool:
    return (
        os.access(CERTMONGER, os.X_OK) and shutil.which("getcert") is not None and scep_submit() is not None
    )


@dataclass
class Result:
    returncode: int
    output: str
    status: str  # certmonger's request status, e.g. MONITORING (issued) or CA_REJECTED
    certificate: Path
    key: Path


async def enroll(
    work: Path,
    url: str,
    challenge: str,
    subject_cn: str,
    *,
    ca_file: Path,
    cipher: str | None = None,
    digest: str | None = None,
    timeout: float = 120,
) -> Result:
    for sub in ("conf", "req", "cas", "tmp"):
        (work / sub).mkdir(parents=True, exist_ok=True)
    helper = scep_submit()
    assert helper is not None
    lines = [
        "id=MDM",
        "ca_is_default=0",
        "ca_type=EXTERNAL",
        f"ca_external_helper={helper} -u {url} -R {ca_file}",
    ]
    if cipher:
        lines.append(f"scep_cipher={cipher}")
    if digest:
        lines.append(f"scep_digest={digest}")
    (work / "cas" / "MDM").write_text("\n".join(lines) + "\n")
    cert, key = work / "device.pem", work / "device.key"
    script = work / "run.sh"
    script.write_text(
        "set -u\n"
        f"getcert request -c MDM -k {key} -f {cert} -N CN={subject_cn} -L {challenge} -w --wait-timeout 90\n"
        "echo GETCERT_RC=$?\n"
        "getcert list\n"
    )
    env = {
        "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
        "HOME": str(work),
        "CERTMONGER_CONFIG_DIR": str(work / "conf"),
        "CERTMONGER_REQUESTS_DIR": str(work / "req"),
        "CERTMONGER_CAS_DIR": str(work / "cas"),
        "CERTMONGER_TMPDIR": str(work / "tmp"),
    }
    proc = await asyncio.create_subprocess_exec(
        CERTMONGER,
        "-s",
        "-L",
        "-P",
        str(work / "socket"),
        "-n",
        "-c",
        f"bash {script}",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    text = out.decode(errors="replace")
    status = next(
        (line.split(":", 1)[1].strip() for line in text.splitlines() if line.strip().startswith("status:")),
        "",
    )
    return Result(proc.returncode or 0, text, status, cert, key)
