"""The search benchmark's CPU-by-process probe: roles by command line, and the CPU seconds of
the driver and the processes it started, read back from the probe log."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import _search_probe as probe

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize(
    ("cmdline", "role"),
    [
        (["ray::ImplicitFunc.train"], "trial workers"),
        (["ray::IDLE"], "idle Ray workers"),
        ([".../ray/core/src/ray/raylet/raylet", "--raylet_socket_name=x"], "raylet"),
        ([".../ray/core/src/ray/gcs/gcs_server", "--gcs_server_port=1"], "GCS server"),
        (["python", ".../ray/dashboard/agent.py", "--node-ip-address=127.0.0.1"],
         "dashboard agent"),
        (["python", ".../ray/dashboard/dashboard.py", "--host=127.0.0.1"], "dashboard"),
        (["python", ".../ray/_private/log_monitor.py"], "log monitor"),
        (["python", "-m", "something_else"], "other Ray"),
    ],
)  # fmt: skip
def test_a_process_role_comes_from_its_command_line(cmdline: list[str], role: str) -> None:
    assert probe._role(cmdline) == role


def test_process_cpu_counts_the_driver_and_what_it_started(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "probe.jsonl"
    monkeypatch.setenv(probe.LOG_ENV, str(log))
    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass\n"
    child = subprocess.Popen([sys.executable, "-c", burn + "import time; time.sleep(30)"])
    try:
        sum(i * i for i in range(2_000_000))  # the driver's own CPU
        for _ in range(100):  # until the child has burnt its 0.3 s
            probe._record_process_cpu()
            used = probe.process_cpu(log)
            if used.get("other Ray", 0.0) >= 0.3:
                break
            log.unlink()
            subprocess.run([sys.executable, "-c", "import time; time.sleep(0.1)"], check=True)
    finally:
        child.kill()
        child.wait()
    assert used["driver"] > 0.05 and used["other Ray"] >= 0.3, used
