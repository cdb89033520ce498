"""Start and stop a ``monailabel start_server`` of this app on 127.0.0.1 (the tests and the latency benchmark)."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import requests

__all__ = ["APP", "monailabel_command", "start_server", "stop_server"]

APP = Path(__file__).resolve().parents[1]
"""The app folder (``apps/monailabel``)."""


def monailabel_command() -> list[str]:
    """MONAI Label's command line as the README types it: this interpreter running ``monailabel.main`` (not the
    ``monailabel`` wrapper script, which runs whatever ``python`` is first on the PATH). ``FileNotFoundError`` naming
    the environment when MONAI Label is not installed there (``scripts/install.sh`` installs it)."""
    if importlib.util.find_spec("monailabel") is None:
        raise FileNotFoundError(
            f"monailabel: expected MONAI Label installed in {sys.prefix}; run bash scripts/install.sh"
        )
    return [sys.executable, "-m", "monailabel.main"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(
    studies: str | Path,
    conf: Mapping[str, object],
    log: str | Path,
    timeout: float = 240.0,
    threads: int = 1,
) -> tuple[str, subprocess.Popen]:
    """Start the app on 127.0.0.1 and a free port, and poll ``GET /info/`` until it answers.

    Args:
        studies: the datastore folder.
        conf: the app's ``--conf`` keys (values that are not strings are passed as compact JSON: the ``monailabel``
            script splits its arguments on spaces).
        log: file that receives the server's output.
        timeout: seconds to wait for ``/info/``.
        threads: ``OMP_NUM_THREADS`` of the server (unless already set in the environment).

    Returns: (base URL, the server process). Raises ``RuntimeError`` with the end of the log when the server exits or
    does not answer in time (then it is stopped).
    """
    port = _free_port()
    cmd = [*monailabel_command(), "start_server", "--app", str(APP), "--studies", str(studies)]
    cmd += ["--host", "127.0.0.1", "--port", str(port)]
    for key, value in conf.items():
        cmd += ["--conf", key, value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))]
    venv_bin = str(Path(sys.executable).parent)
    env = {  # a fresh shell's PATH: this environment's bin folder is not on it (no activated venv)
        **os.environ,
        "PATH": os.pathsep.join(d for d in os.environ.get("PATH", os.defpath).split(os.pathsep) if d != venv_bin),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(threads)),
        "MONAI_LABEL_AUTO_UPDATE_SCORING": "false",
    }
    log = Path(log)
    proc = subprocess.Popen(cmd, stdout=open(log, "w"), stderr=subprocess.STDOUT, env=env, cwd=APP.parents[1])
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"monailabel exited with {proc.returncode}:\n{log.read_text()[-6000:]}")
        try:
            if requests.get(f"{url}/info/", timeout=5).status_code == 200:
                return url, proc
        except requests.ConnectionError:
            pass
        time.sleep(1)
    stop_server(proc)
    raise RuntimeError(f"monailabel did not answer GET /info/ within {timeout} s:\n{log.read_text()[-6000:]}")


def stop_server(proc: subprocess.Popen) -> None:
    """Stop the server by its PID (SIGTERM, then SIGKILL after 30 s)."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
