"""Three trials on one CPU with Tune's actor reuse, one of them given a broken reused worker
(run by ``test_tune_reuse.py`` in a subprocess; prints one JSON line of what Tune decided).

    python tune_reuse_run.py STORAGE --fault kill|raise [--unpatched]

``kill``: the first trial's worker is SIGKILLed once the trial has finished, so the next trial
gets a dead cached worker. ``raise``: the reused worker's ``reset_config`` raises once.
``--unpatched`` runs Tune as Ray ships it, without ``search._tune_reuse.install``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def dead(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def main() -> int:
    from ray import tune

    parser = argparse.ArgumentParser()
    parser.add_argument("storage", type=Path)
    parser.add_argument("--fault", choices=("kill", "raise"), required=True)
    parser.add_argument("--unpatched", action="store_true")
    args = parser.parse_args()
    storage = args.storage.resolve()
    raised_once = storage / "reset-raised"

    class Scores(tune.Trainable):
        def setup(self, config: dict) -> None:
            self.x = config["x"]

        def step(self) -> dict:
            return {"score": self.x, "pid": os.getpid(), "done": True}

        def save_checkpoint(self, checkpoint_dir: str) -> None:
            Path(checkpoint_dir, "x").write_text(str(self.x))

        def load_checkpoint(self, checkpoint_dir: str) -> None:
            self.x = int(Path(checkpoint_dir, "x").read_text())

        def reset_config(self, new_config: dict) -> bool:
            if args.fault == "raise" and not raised_once.exists():
                raised_once.touch()
                raise OSError("reset_config failed once (injected by the test)")
            self.x = new_config["x"]
            return True

    class Faults(tune.Callback):
        def __init__(self) -> None:
            self.killed, self.failures = False, {}

        def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
            self.failures[trial.config["x"]] = trial.run_metadata.num_failures
            if args.fault == "kill" and not self.killed:
                pid = trial.last_result["pid"]
                os.kill(pid, signal.SIGKILL)
                while not dead(pid):
                    time.sleep(0.05)
                self.killed = True

        def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
            self.failures[trial.config["x"]] = trial.run_metadata.num_failures

    import ray

    from search.raycluster import enable_token_auth

    if not args.unpatched:
        from search._tune_reuse import install

        install()
    enable_token_auth(create=True)
    ray.init(num_cpus=1, include_dashboard=False, logging_level="ERROR")
    faults = Faults()
    grid = tune.Tuner(
        Scores,
        param_space={"x": tune.grid_search([1, 2, 3])},
        tune_config=tune.TuneConfig(reuse_actors=True),
        run_config=tune.RunConfig(
            storage_path=str(storage),
            name="reuse",
            verbose=0,
            callbacks=[faults],
            failure_config=tune.FailureConfig(max_failures=3),
        ),  # fmt: skip
    ).fit()
    scores = sorted(r.metrics["score"] for r in grid if r.error is None)
    print(json.dumps({"errors": grid.num_errors, "scores": scores, "failures": faults.failures}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
