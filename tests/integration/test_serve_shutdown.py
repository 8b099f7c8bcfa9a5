"""`dentvlm serve` stops cleanly (issue class: stopping the server): on Ctrl+C, which a terminal sends to
every process of its group, on SIGINT or SIGTERM (`kill`) to the server alone, on SIGTERM to the whole
group (systemd's default), and while its workers are still loading: exit status 0, one line, no traceback
from the server or its worker processes, and no process left behind."""

import os
import signal
import sys
import time

import pytest

from .serving import Server, session_processes

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def stopped(server: Server, signum: int, whole_group: bool) -> str:
    """Send `signum`, wait for the exit, and return the server's output once its session is empty."""
    session = server.process.pid
    if whole_group:
        os.killpg(session, signum)
    else:
        os.kill(session, signum)
    try:
        code = server.process.wait(timeout=90)
    finally:
        server.stop()  # kills the whole group if it hangs
    deadline = time.monotonic() + 15
    while session_processes(session) and time.monotonic() < deadline:
        time.sleep(0.2)
    output = server.log.read_text(errors="replace")
    assert code == 0, output
    assert not session_processes(session), output
    assert "Traceback" not in output and "Error" not in output, output
    assert output.rstrip().endswith("dentvlm serve: stopped"), output
    return output


@pytest.mark.slow
@pytest.mark.parametrize(("signum", "whole_group"), [
    (signal.SIGINT, True), (signal.SIGTERM, False), (signal.SIGINT, False), (signal.SIGTERM, True)],
    ids=["ctrl-c", "kill", "sigint", "sigterm-group"])
def test_serve_stops_cleanly(signum, whole_group, tmp_path):
    server = Server(["tiny", "--max_batch_size", "2"], log=tmp_path / "serve.log")
    server.wait_ready()
    assert len(server.processes()) >= 3  # the server, its HTTP process and an inference worker (and helpers)
    stopped(server, signum, whole_group)


@pytest.mark.slow
def test_serve_stops_cleanly_while_its_worker_loads(tmp_path):
    log = tmp_path / "serve.log"
    server = Server(["tiny"], log=log)
    deadline = time.monotonic() + 120
    while "dentvlm serve: tiny" not in log.read_text() and time.monotonic() < deadline:  # the worker starts now
        time.sleep(0.05)
    time.sleep(0.5)
    stopped(server, signal.SIGINT, whole_group=True)
