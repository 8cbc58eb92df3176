"""The ``wen`` command in a subprocess (own session, output collected) for end-to-end tests."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "configs" / "smoke.yaml"


def unshare_works() -> bool:
    """Whether ``unshare -n`` (a private network namespace; needs root) works here."""
    import shutil

    return (
        shutil.which("unshare") is not None
        and subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0
    )


def run_in_private_network(
    script: str, *, cwd: Path, env: dict[str, str], timeout: float
) -> subprocess.CompletedProcess[str]:
    """Run a bash ``script`` in a new network namespace, output collected. Multi-node Ray
    clusters run this way: Ray advertises the machine's address, which then is unreachable."""
    return subprocess.run(
        ["unshare", "-n", "bash", "-c", script], cwd=cwd, env=env,
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def wen_command() -> list[str]:
    """The ``wen`` script next to this interpreter, else ``python -m search``."""
    script = Path(sys.executable).parent / "wen"
    return [str(script)] if script.exists() else [sys.executable, "-m", "search"]


class WenProcess:
    """A ``wen`` subprocess in its own session whose output is collected line by line."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            wen_command() + args,
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for(
        self, condition: Callable[[], object], timeout: float, what: str, interval: float = 0.5
    ) -> object:
        """Poll ``condition`` every ``interval`` s until it returns something truthy, or fail
        naming ``what``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = condition()
            if value:
                return value
            if self.proc.poll() is not None:
                value = condition()
                if value:
                    return value
                raise AssertionError(
                    f"wen exited ({self.proc.returncode}) before {what}:\n{self.output[-4000:]}"
                )
            time.sleep(interval)
        raise AssertionError(f"timed out waiting for {what}:\n{self.output[-4000:]}")

    def finish(self, timeout: float) -> int:
        """Wait for the exit code; kill the whole session (processes this test started) on timeout."""
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill_group()
            raise AssertionError(
                f"wen did not finish in {timeout} s:\n{self.output[-4000:]}"
            ) from None
        self._reader.join(timeout=10)
        return code

    def kill_driver(self) -> None:
        """SIGKILL the driver alone, as a crash would, then whatever Ray processes it left."""
        import signal

        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        self.kill_group()

    def kill_group(self) -> None:
        """SIGKILL this subprocess's session: the driver and any Ray process it started."""
        import signal

        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=30)


def listening_addresses(port: int) -> set[str]:
    """Local addresses with a TCP socket in LISTEN state on ``port`` (from /proc/net/tcp{,6})."""
    out: set[str] = set()
    for table, v6 in (("/proc/net/tcp", False), ("/proc/net/tcp6", True)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state = fields[1], fields[3]
            address, hex_port = local.split(":")
            if state != "0A" or int(hex_port, 16) != port:
                continue
            out.add(_address(address, v6))
    return out


def _address(hex_address: str, v6: bool) -> str:
    raw = bytes.fromhex(hex_address)
    if not v6:
        return ".".join(str(b) for b in raw[::-1])
    # /proc stores IPv6 as four little-endian 32-bit words
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
    import ipaddress

    mapped = ipaddress.IPv6Address(words)
    return str(mapped.ipv4_mapped or mapped)
