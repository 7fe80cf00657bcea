"""Warn when a server runs on this data directory with a configuration other than the one a CLI
command just loaded (``mdm.toml`` as it is now, with this shell's ``MDM_*`` variables).

The server writes per-key digests of the configuration it runs with to ``run/state.json``
(``mdm.server.reloader``); comparing them names the keys without either side writing values.
"""

from __future__ import annotations

import sys

from mdm.config import Config
from mdm.config_reload import fingerprint
from mdm.server.runfiles import read_state, running_pid


def server_differences(config: Config) -> tuple[int, list[str], list[str]] | None:
    """(pid, keys that differ, keys the server waits to restart for), or None if no server runs
    here or it does not say what it runs with."""
    pid = running_pid(config.data_path)
    if pid is None:
        return None
    state = read_state(config.data_path)
    if state is None or state.get("pid") != pid or not isinstance(state.get("config"), dict):
        return None
    theirs: dict[str, str] = state["config"]
    ours = fingerprint(config)
    # The directory is the same one (its pid file led here), however it was spelt.
    skip = {"data_dir", *(state.get("overrides") or [])}
    differ = sorted(k for k in theirs.keys() | ours.keys() if k not in skip and theirs.get(k) != ours.get(k))
    pending = [k for k in state.get("restart_pending") or [] if isinstance(k, str)]
    return pid, differ, pending


def warn_if_server_differs(config: Config) -> None:
    found = server_differences(config)
    if found is None or not found[1]:
        return
    pid, differ, pending = found
    waiting = [k for k in differ if k in pending]
    unread = [k for k in differ if k not in pending]
    path = config.data_path / "mdm.toml"
    lines = [f"mdm: warning: the server running on this data directory (pid {pid}) uses another "
             f"configuration than {path} with this shell's MDM_* variables:"]
    if unread:
        lines.append(f"mdm: warning:   not loaded yet: {', '.join(unread)} (run `mdm reload`; it says "
                     "which keys need a restart; or the server's environment sets them differently)")
    if waiting:
        lines.append(f"mdm: warning:   loaded, waiting for a restart: {', '.join(waiting)}")
    lines.append("mdm: warning:   this command uses the file's values")
    print("\n".join(lines), file=sys.stderr)
