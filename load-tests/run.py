"""Run the load test against a whole local gateway and print throughput and latency percentiles.

Starts Triton (the production model architecture at 128 px, packaged as the trainer packages
it) and the gateway on Ray Serve over the embedded bus, then Locust headless: ``--users`` line
PCs, each at ``--rate`` units/s, for ``--seconds``. Prints Locust's aggregate (requests/s,
failures, p50/p95/p99) and fails when any request failed.

    python load-tests/run.py                  # 16 lines at 4 units/s for 60 s
    python load-tests/run.py --quick          # 8 lines for 15 s (CI)
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from inspectloop.devtools.gateway_stack import gateway_stack
from inspectloop.trainer.model import ModelSpec

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=16, help="line PCs")
    parser.add_argument("--rate", type=float, default=4.0, help="units/s per line")
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--quick", action="store_true", help="8 lines for 15 s")
    args = parser.parse_args()
    if args.quick:
        args.users, args.seconds = 8, 15
    with (
        tempfile.TemporaryDirectory() as tmp,
        gateway_stack(Path(tmp), spec=ModelSpec(), max_queue_delay_us=0) as stack,
    ):
        prefix = Path(tmp) / "locust"
        command = [
            sys.executable, "-m", "locust",
            "-f", str(HERE / "locustfile.py"),
            "--headless", "--only-summary",
            "--users", str(args.users), "--spawn-rate", str(args.users),
            "--run-time", f"{args.seconds}s",
            "--host", stack.http_url,
            "--csv", str(prefix),
        ]  # fmt: skip
        env = {**os.environ, "INSPECTLOOP_LOAD_RATE": str(args.rate)}
        done = subprocess.run(command, env=env, check=False)
        with open(f"{prefix}_stats.csv", encoding="utf-8") as stats:
            total = next(r for r in csv.DictReader(stats) if r["Name"] == "Aggregated")
    print(
        f"load test: {args.users} lines x {args.rate:g} units/s for {args.seconds} s: "
        f"{float(total['Requests/s']):.1f} requests/s, {total['Request Count']} requests, "
        f"{total['Failure Count']} failed; p50 {total['50%']} ms, p95 {total['95%']} ms, "
        f"p99 {total['99%']} ms"
    )
    if done.returncode != 0 or int(total["Failure Count"]) > 0:
        sys.exit(f"load test failed (locust exit {done.returncode})")


if __name__ == "__main__":
    main()
