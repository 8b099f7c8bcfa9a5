"""A checkpoint evaluated in-process and through `dentvlm serve`, side by side, and the endpoint
evaluation's throughput at two concurrencies against the local server, in one run.

    python benchmarks/serving.py --checkpoint runs/tiny/checkpoints/last.ckpt [--config configs/tiny.yaml]
        [--concurrency 1 8] [--max-batch-size 8] [--work /tmp/dentvlm-serving]

Prints the results folder's report.md (the in-process "fine-tuned" row and the served row in one
table) and requests/s per concurrency (each with an empty response cache). Set OMP_NUM_THREADS=1
on a busy 2-core machine, as for every side-by-side benchmark here.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def dentvlm(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "dentvlm", *args], check=True)


def start_server(args: list[str], log: Path, env: dict | None = None, cwd: Path | None = None
                 ) -> tuple[subprocess.Popen, str]:
    """`python -m dentvlm serve ARGS` on a free loopback port, in a session of its own (see `stop_server`); its
    process and base URL once /health answers.

    Raises:
        RuntimeError: it exited, or did not answer in 10 minutes (its log says why).
    """
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen([sys.executable, "-m", "dentvlm", "serve", *args, "--port", str(port)],
                               stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True, env=env,
                               cwd=cwd)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"dentvlm serve exited {process.returncode} (log {log}): {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                if response.status == 200:
                    return process, f"http://127.0.0.1:{port}/v1"
        except OSError:
            time.sleep(0.5)
    stop_server(process)
    raise RuntimeError(f"dentvlm serve did not start in 10 minutes (log {log})")


def stop_server(process: subprocess.Popen, timeout: float = 120) -> None:
    """SIGTERM to the server's session (the server, its HTTP process and workers); SIGKILL after `timeout`."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:  # already gone
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--config", default="configs/tiny.yaml")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--max-batch-size", type=int, default=8)
    parser.add_argument("--work", default="/tmp/dentvlm-serving")
    args = parser.parse_args()
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    common = ["--config", args.config, "--trainer.default_root_dir", str(work), "--trainer.logger",
              "lightning.pytorch.loggers.CSVLogger", "--trainer.logger.save_dir", str(work),
              "--data.num_workers", "0"]
    results = work / "results"
    start = time.perf_counter()
    dentvlm("test", *common, "--ckpt_path", args.checkpoint, "--results.baselines", "[]",
            "--results.out_dir", str(results))
    in_process = time.perf_counter() - start
    try:
        server, url = start_server([args.checkpoint, "--max_batch_size", str(args.max_batch_size)], work / "serve.log")
    except RuntimeError as exc:
        raise SystemExit(str(exc)) from None
    rates = {}
    try:
        for concurrency in args.concurrency:
            last = concurrency == args.concurrency[-1]
            out = results if last else work / f"results-c{concurrency}"
            dentvlm("test", *common, "--endpoint.base_url", url, "--endpoint.model", "served",
                    "--endpoint.name", "served (dentvlm serve)", "--endpoint.concurrency", str(concurrency),
                    "--endpoint.cache_dir", str(work / f"cache-c{concurrency}"), "--results.out_dir", str(out))
            details = json.loads((out / "metrics.json").read_text())["variants"]["served (dentvlm serve)"]["details"]
            rates[concurrency] = details
    finally:
        stop_server(server)
    print((results / "report.md").read_text())
    print(f"in-process `dentvlm test` (load, generate, metrics): {in_process:.1f} s; uptime: "
          f"{subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")
    print("| concurrency | requests | seconds | requests/s |\n|---|---|---|---|")
    for concurrency, details in rates.items():
        print(f"| {concurrency} | {details['requests']} | {details['seconds']:.1f} | "
              f"{details['requests_per_second']:.2f} |")


if __name__ == "__main__":
    main()
