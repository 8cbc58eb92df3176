"""A search under a seeded schedule of faults on a two-node loopback cluster (run by
``test_fault_chaos.py`` inside ``unshare -n``; prints one JSON line of what it did).

    python chaos_search.py --storage DIR --name NAME --samples 30 --seed 7

Starts ``cluster/local_cluster.sh`` (a head and one worker node, token auth), runs
``wen search --address`` against it and, while the search runs:

- SIGKILLs one trial worker process (``ray::ImplicitFunc``, on either node) every 15-25 s;
- once 30% of the trials have their predictions, kills the worker node (every process of its
  session) and starts a new one 5-10 s later (``start-worker``);
- once 55% have them and the node is back, SIGKILLs the driver and runs the same command
  with ``--resume``, which must finish the search.

Every draw (the victims, the intervals, the delays) comes from ``random.Random(seed)``;
what a draw picks depends on which processes are alive at that moment.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CLUSTER = REPO / "cluster" / "local_cluster.sh"
WORKER = "ray::ImplicitFunc"


def trial_workers() -> list[int]:
    """The pids of every live trial worker process on this machine (both nodes)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if cmd.startswith(WORKER) and state != "Z":
            pids.append(int(entry.name))
    return sorted(pids)


def finished(run: Path) -> int:
    """How many trials have their (visible) best-epoch predictions."""
    folder = run / "predictions"
    return len([p for p in folder.glob("*.parquet") if not p.name.startswith((".", "_"))])


def cluster(*args: str) -> None:
    subprocess.run([str(CLUSTER), *args], check=True, timeout=180)


class Driver:
    """``wen search`` as a subprocess of its own session, its output appended to ``log``."""

    def __init__(self, command: list[str], log: Path) -> None:
        self.command, self.log = command, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *extra: str) -> None:
        out = self.log.open("ab")
        self.proc = subprocess.Popen(
            [*self.command, *extra], cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip

    def kill(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=60)


def chaos(driver: Driver, run: Path, samples: int, rng: random.Random, deadline: float) -> dict:
    done: dict = {"worker_kills": 0, "node_kills": 0, "node_restarts": 0, "driver_kills": 0}
    driver.start()
    next_kill = time.monotonic() + rng.uniform(15, 25)
    node_back_at: float | None = None
    while time.monotonic() < deadline:
        assert driver.proc is not None
        if driver.proc.poll() is not None:
            done["rc"] = driver.proc.returncode
            break
        now, count = time.monotonic(), finished(run)
        victims = trial_workers()
        if now >= next_kill and victims:
            os.kill(rng.choice(victims), signal.SIGKILL)
            done["worker_kills"] += 1
            next_kill = now + rng.uniform(15, 25)
        if not done["node_kills"] and count >= 0.3 * samples:
            cluster("stop-worker", "1")
            done["node_kills"] = 1
            node_back_at = now + rng.uniform(5, 10)
        if node_back_at is not None and now >= node_back_at:
            cluster("start-worker", "1")
            done["node_restarts"] = 1
            node_back_at = None
        if done["node_restarts"] and not done["driver_kills"] and count >= 0.55 * samples:
            driver.kill()
            done["driver_kills"] = 1
            driver.start("--resume")
        time.sleep(0.5)
    else:
        assert driver.proc is not None
        driver.proc.kill()
        done["rc"] = "timed out"
    return done


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--storage", type=Path, required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--samples", type=int, default=30)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--port", type=int, default=6395)
    parser.add_argument("--timeout", type=float, default=900)
    args = parser.parse_args()
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    wen = [str(Path(sys.executable).parent / "wen"), "search", str(REPO / "configs" / "smoke.yaml"),
           "--address", f"127.0.0.1:{args.port}", "--storage", str(args.storage),
           "--name", args.name,
           "--set", "search.folds=null", "--set", "search.algorithm=optuna",
           "--set", f"search.num_samples={args.samples}", "--set", "search.max_failures=8",
           "--set", "train.epochs=3", "--set", "data.synthetic.cells_per_subject=8",
           "--set", "search.space={schedule.max_lr: {type: loguniform, low: 1.0e-4, high: 1.0e-2}}",
           ]  # fmt: skip
    started = time.monotonic()
    cluster("start")
    try:
        done = chaos(
            Driver(wen, args.storage / f"{args.name}.log"),
            args.storage / args.name,
            args.samples,
            random.Random(args.seed),
            started + args.timeout,
        )
    finally:
        cluster("stop")
    done["seconds"] = round(time.monotonic() - started, 1)
    print(json.dumps(done), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
