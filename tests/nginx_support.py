"""nginx from the system (Debian's, with the njs module) in front of a test server: renders the
operator's own ``deploy/nginx/mdm.conf`` (its ``${MDM_...}`` placeholders) and runs it as a
subprocess with every path (pid, logs, temp files) under a temporary directory.

Nothing of the configuration is copied or rewritten beyond the placeholders: the test exercises
the file an operator installs. The surrounding ``nginx.conf`` is the minimal main context a
distribution's own provides (module, events, the http block including the site file).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SITE = ROOT / "deploy" / "nginx" / "mdm.conf"
NJS = ROOT / "deploy" / "nginx" / "client_cert.js"
JS_MODULE = Path("/usr/lib/nginx/modules/ngx_http_js_module.so")
_PLACEHOLDER = re.compile(r"\$\{(MDM_[A-Z_]+)\}")


def nginx_binary() -> str:
    """The nginx binary, or skip: the reverse-proxy tests need the real one (.ci/run installs it)."""
    found = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )
    if found is None:
        pytest.skip("nginx is not installed (apt install nginx libnginx-mod-http-js)")
    return found


def placeholders(text: str) -> set[str]:
    """The names the site file declares in its ``# placeholder:`` lines."""
    return set(re.findall(r"^# placeholder: \$\{(MDM_[A-Z_]+)\}", text, re.MULTILINE))


def render(values: Mapping[str, str]) -> str:
    """The site file with its placeholders replaced, as ``envsubst`` limited to them does."""
    text = SITE.read_text()
    declared = placeholders(text)
    used = set(_PLACEHOLDER.findall(text))
    assert used == declared, f"undeclared or unused placeholders: {used ^ declared}"
    missing = declared - set(values)
    assert not missing, f"no value for {sorted(missing)}"
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], text)


@dataclass(frozen=True)
class Nginx:
    ios_port: int
    kes_port: int
    web_port: int
    directory: Path

    def error_log(self) -> str:
        path = self.directory / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""


def _main_conf(directory: Path, site: Path) -> str:
    temp = directory / "temp"
    # As root nginx would hand the workers to "nobody", who cannot enter pytest's 0700 tmp dirs.
    user = "user root root;\n" if os.geteuid() == 0 else ""
    module = f"load_module {JS_MODULE};\n" if JS_MODULE.exists() else ""
    return (
        f"{module}{user}worker_processes 1;\n"
        f"error_log {directory / 'error.log'} info;\n"
        "events { worker_connections 256; }\n"
        "http {\n"
        f"    access_log {directory / 'access.log'};\n"
        f"    client_body_temp_path {temp / 'body'};\n"
        f"    proxy_temp_path {temp / 'proxy'};\n"
        f"    fastcgi_temp_path {temp / 'fastcgi'};\n"
        f"    uwsgi_temp_path {temp / 'uwsgi'};\n"
        f"    scgi_temp_path {temp / 'scgi'};\n"
        f"    include {site};\n"
        "}\n"
    )


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


@contextmanager
def run_nginx(
    directory: Path,
    *,
    ports: tuple[int, int, int],
    upstreams: Mapping[str, str],
    public_name: str,
    cert: Path,
    key: Path,
) -> Iterator[Nginx]:
    """nginx publishing ``upstreams`` (``ios``, ``kes``, ``web`` → ADDRESS:PORT) on 127.0.0.1 at
    ``ports`` (ios, kes, web); stopped (SIGQUIT, then SIGKILL) on exit."""
    binary = nginx_binary()
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "temp").mkdir(exist_ok=True)
    ios, kes, web = ports
    site = directory / "mdm.conf"
    site.write_text(
        render(
            {
                "MDM_PUBLIC_NAME": public_name,
                "MDM_TLS_CERT": str(cert),
                "MDM_TLS_KEY": str(key),
                "MDM_NJS": str(NJS),
                "MDM_LISTEN_IOS": f"127.0.0.1:{ios}",
                "MDM_LISTEN_KES": f"127.0.0.1:{kes}",
                "MDM_LISTEN_WEB": f"127.0.0.1:{web}",
                "MDM_UPSTREAM_IOS": upstreams["ios"],
                "MDM_UPSTREAM_KES": upstreams["kes"],
                "MDM_UPSTREAM_WEB": upstreams["web"],
            }
        )
    )
    main = directory / "nginx.conf"
    main.write_text(_main_conf(directory, site))
    argv = [binary, "-p", str(directory), "-c", str(main), "-e", str(directory / "error.log")]
    check = subprocess.run([*argv, "-t"], capture_output=True, text=True, timeout=30, check=False)
    assert check.returncode == 0, f"nginx -t refused the configuration:\n{check.stderr}"
    process = subprocess.Popen(
        [*argv, "-g", f"daemon off; pid {directory / 'nginx.pid'};"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 10
        while not all(_listening(p) for p in ports):
            if process.poll() is not None:
                stderr = process.stderr.read().decode(errors="replace") if process.stderr else ""
                raise AssertionError(f"nginx exited with {process.returncode}:\n{stderr}")
            if time.monotonic() > deadline:
                raise AssertionError(f"nginx is not listening on {ports}")
            time.sleep(0.05)
        yield Nginx(ios, kes, web, directory)
    finally:
        process.send_signal(signal.SIGQUIT)  # graceful: finish in-flight requests
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
        if process.stderr:
            process.stderr.close()
