"""Start `dentvlm serve` as a real process on a loopback port, for tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
STARTUP_SECONDS = 240  # a spawned inference worker imports torch and loads the model: slow on 2 busy cores


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def session_processes(session: int) -> list[int]:
    """Pids of the live (not zombie) processes of `session`, from /proc (Linux)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # after "pid (command)": state ppid pgrp session
        except OSError:  # ended meanwhile
            continue
        if fields[0] != "Z" and int(fields[3]) == session:
            pids.append(int(stat.parent.name))
    return pids


class Server:
    """`python -m dentvlm serve ARGS` on a free port; stopped (with its workers) by `stop`."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None, log: Path | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        environment = {**os.environ, **(env or {})}
        environment["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), environment.get("PYTHONPATH", "")])
        self.log = log
        self.output = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115 (closed in stop)
        self.process = subprocess.Popen([sys.executable, "-m", "dentvlm", "serve", *args, "--port", str(self.port)],
                                        env=environment, stdout=self.output, stderr=subprocess.STDOUT,
                                        start_new_session=True)

    def wait_ready(self, api_key: str | None = None) -> None:
        """Wait for /health to answer 200 (LitServe puts it behind the API key too)."""
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"dentvlm serve exited with {self.process.returncode}: {self.log_text()}")
            try:
                request = urllib.request.Request(f"http://127.0.0.1:{self.port}/health", headers=headers)
                with urllib.request.urlopen(request, timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.5)
        raise TimeoutError(f"dentvlm serve not ready after {STARTUP_SECONDS} s: {self.log_text()}")

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log and self.log.exists() else ""

    def processes(self) -> list[int]:
        """Live processes of the server's session (it starts one): itself, its workers and their helpers."""
        return session_processes(self.process.pid)

    def stop(self) -> int:
        """SIGTERM, as `kill` sends; returns the exit code (the whole process group is killed if it hangs)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        if self.log:
            self.output.close()
        return self.process.returncode
