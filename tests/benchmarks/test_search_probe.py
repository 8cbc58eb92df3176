"""The search benchmark's CPU-by-process probe: roles by the program a process runs, and the
CPU seconds of the driver and of the processes it started, including one that ended."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from benchmarks import _search_probe as probe

pytestmark = pytest.mark.timeout(60)
PY = "/venv/bin/python3.11"


@pytest.mark.parametrize(
    ("cmdline", "role"),
    [
        (["ray::ImplicitFunc.train"], "trial workers"),
        (["ray::wen_trial.train"], "trial workers"),
        (["ray::IDLE"], "idle Ray workers"),
        ([".../ray/core/src/ray/raylet/raylet", "--raylet_socket_name=x",
          "--python_worker_command=python .../default_worker.py"], "raylet"),
        ([".../ray/core/src/ray/gcs/gcs_server", "--gcs_server_port=1"], "GCS server"),
        (["ray::DashboardAgent"], "dashboard agent"),
        (["ray::RuntimeEnvAgent"], "runtime-env agent"),
        ([PY, ".../ray/dashboard/dashboard.py", "--host=127.0.0.1"], "dashboard"),
        (["ray-dashboard-MetricsHead-0 (python -B -c ...)"], "dashboard"),
        ([PY, "-u", ".../ray/_private/log_monitor.py", "--session-dir=x"], "log monitor"),
        ([PY, "-u", ".../ray/autoscaler/_private/monitor.py"], "autoscaler monitor"),
        ([PY, "-c", "print(1)"], "other"),
        ([], "other"),
    ],
)  # fmt: skip
def test_a_process_role_comes_from_the_program_it_runs(cmdline: list[str], role: str) -> None:
    assert probe._role(cmdline) == role


def test_the_sampler_counts_the_driver_and_a_child_that_ended() -> None:
    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.6: pass\n"
    with probe.CPUSampler(interval=0.1) as sampler:
        child = subprocess.Popen([sys.executable, "-c", burn + "time.sleep(0.5)"])
        sum(i * i for i in range(3_000_000))  # the driver's own CPU
        child.wait(timeout=30)
        time.sleep(0.3)
    used = sampler.by_role()
    assert used["driver"] > 0.05, used
    assert 0.5 <= used["other"] < 2.0, used  # the child's 0.6 s, kept after it ended
