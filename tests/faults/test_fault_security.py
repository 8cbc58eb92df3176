"""Fault: Ray's token authentication is on for every cluster the project starts.

The token file is the owner's alone (mode 0600), a driver with the token joins and runs a
task, and a driver with no token or a wrong one is refused by the cluster itself.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from search.raycluster import RayAuthError, default_token_path, enable_token_auth, ensure_auth_token

from wen_proc import REPO, run_in_private_network, unshare_works

CLUSTER = REPO / "cluster" / "local_cluster.sh"
WRONG_TOKEN = "0" * 64


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private HOME with no token in the environment."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for var in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE"):
        monkeypatch.delenv(var, raising=False)
    return home


def test_new_token_file_is_owner_only(home: Path) -> None:
    old = os.umask(0o022)  # the usual umask, under which Ray's own generator writes 0644
    try:
        path = ensure_auth_token(create=True)
    finally:
        os.umask(old)
    assert path == default_token_path() == home / ".ray" / "auth_token"
    assert _mode(path) == 0o600 and _mode(path.parent) == 0o700
    assert len(path.read_text()) == 64 and int(path.read_text(), 16)  # 256 bits, hex
    assert ensure_auth_token(create=True) == path  # kept, not replaced
    assert len({path.read_text(), ensure_auth_token(create=True).read_text()}) == 1


def test_readable_token_file_is_narrowed_to_owner(home: Path) -> None:
    path = home / ".ray" / "auth_token"
    path.parent.mkdir()
    path.write_text("a" * 64)
    path.chmod(0o644)
    assert ensure_auth_token(create=False) == path
    assert _mode(path) == 0o600
    assert path.read_text() == "a" * 64


def test_joining_without_a_token_says_where_to_get_one(home: Path) -> None:
    with pytest.raises(
        RayAuthError, match=r"no Ray authentication token at .*auth_token.*ray get-auth-token.*0600"
    ):
        ensure_auth_token(create=False)
    assert not (home / ".ray" / "auth_token").exists()


def test_auth_mode_disabled_is_refused(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    with pytest.raises(
        RayAuthError, match="RAY_AUTH_MODE=disabled .* only with token authentication"
    ):
        enable_token_auth(create=True)
    assert not (home / ".ray").exists()


def _clean_env(base: dict[str, str], home: Path) -> dict[str, str]:
    env = {k: v for k, v in base.items() if not k.startswith("RAY_AUTH")}
    env.update(HOME=str(home), PATH=f"{Path(sys.executable).parent}:{env.get('PATH', '')}")
    return env


@pytest.mark.slow
def test_in_process_ray_starts_with_token_auth(tmp_path: Path, wen_env: dict[str, str]) -> None:
    """``start_ray`` with no address: RAY_AUTH_MODE=token, token created 0600, task runs."""
    home = tmp_path / "home"
    home.mkdir()
    code = textwrap.dedent("""
        import os, ray
        from ray._raylet import AuthenticationMode, get_authentication_mode
        from search.raycluster import start_ray
        start_ray(None, num_cpus=1, dashboard_port=28265)
        assert get_authentication_mode() == AuthenticationMode.TOKEN
        print("TASK", ray.get(ray.remote(lambda: os.environ.get("RAY_AUTH_MODE")).remote()))
        ray.shutdown()
    """)
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=_clean_env(wen_env, home),
        capture_output=True, text=True, timeout=150,
    )  # fmt: skip
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert "TASK token" in done.stdout  # the task's worker process runs in token mode too
    token = home / ".ray" / "auth_token"
    assert _mode(token) == 0o600, oct(_mode(token))


DRIVER = """
import sys
import ray
from search.raycluster import start_ray

mode = sys.argv[2]
try:
    if mode == "wen":  # the project's driver path: `wen search --address ...`
        start_ray(sys.argv[1], say=lambda _: None)
    else:  # a plain Ray driver
        ray.init(address=sys.argv[1], logging_level="WARNING")
    print("RESULT", ray.get(ray.remote(lambda: 41 + 1).remote(), timeout=60))
except Exception as exc:
    print("REFUSED", type(exc).__name__, exc)
    sys.exit(1)
"""


@pytest.mark.slow
@pytest.mark.skipif(
    not unshare_works(), reason="needs `unshare -n` (root) for a private loopback network"
)
def test_local_cluster_refuses_drivers_without_the_right_token(
    tmp_path: Path, wen_env: dict[str, str]
) -> None:
    """cluster/local_cluster.sh in a private network: the token holder runs a task, others are refused."""
    home, stranger = tmp_path / "home", tmp_path / "stranger"
    home.mkdir()
    stranger.mkdir()
    state = Path(f"/tmp/wens-{os.getpid()}")  # short: Ray's unix sockets live under it
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    py, port = sys.executable, 6392
    # the three drivers run at once: a refused one retries for ~20 s before it gives up
    script = f"""
set -u
ip link set lo up
export WEN_CLUSTER_DIR={state} WEN_CLUSTER_PORT={port} WEN_CLUSTER_WORKERS=0
{CLUSTER} start > {tmp_path}/cluster.log 2>&1 || {{ cat {tmp_path}/cluster.log; {CLUSTER} stop; exit 3; }}
stat -c %a $HOME/.ray/auth_token > {tmp_path}/token_mode
{py} {driver} 127.0.0.1:{port} wen > {tmp_path}/right.log 2>&1 & a=$!
HOME={stranger} {py} {driver} 127.0.0.1:{port} plain > {tmp_path}/none.log 2>&1 & b=$!
RAY_AUTH_MODE=token RAY_AUTH_TOKEN={WRONG_TOKEN} {py} {driver} 127.0.0.1:{port} plain > {tmp_path}/wrong.log 2>&1 & c=$!
wait $a; echo "right=$?"; wait $b; echo "none=$?"; wait $c; echo "wrong=$?"
{CLUSTER} stop
"""
    try:
        done = run_in_private_network(
            script, cwd=tmp_path, env=_clean_env(wen_env, home), timeout=240
        )
    finally:
        shutil.rmtree(state, ignore_errors=True)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    logs = {name: (tmp_path / f"{name}.log").read_text() for name in ("right", "none", "wrong")}
    assert (tmp_path / "token_mode").read_text().strip() == "600"
    assert "right=0" in output and "RESULT 42" in logs["right"], logs["right"][-3000:]
    for name in ("none", "wrong"):
        log = logs[name]
        assert f"{name}=1" in output, output
        assert "RESULT" not in log
        # refused by the cluster's GCS, not by a local check of the driver
        assert "Unauthenticated" in log and "InvalidAuthToken" in log, log[-3000:]
        assert "REFUSED ConnectionError" in log, log[-3000:]
    assert not (stranger / ".ray").exists()  # the stranger's driver made no token of its own


def test_an_unreachable_cluster_is_named_not_a_traceback(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The auth probe's own failure (no GCS there) says which cluster and what to check."""
    import ray._raylet

    from search.raycluster import cluster_requires_token

    class Unreachable:
        def __init__(self, address: str) -> None:
            raise ConnectionError(f"failed to connect to GCS at {address}")

    monkeypatch.setattr(ray._raylet, "GcsClient", Unreachable)
    with pytest.raises(
        RayAuthError, match=r"cannot reach the Ray cluster at 127.0.0.1:6999 .*check --address"
    ):
        cluster_requires_token("127.0.0.1:6999")
    from ray._raylet import AuthenticationMode, get_authentication_mode

    assert get_authentication_mode() == AuthenticationMode.TOKEN  # the probe restored token mode
