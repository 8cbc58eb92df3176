"""Starting or joining Ray, and the checks that must pass before any trial starts.

- With no address Ray starts in this process with the machine's CPUs and GPUs and the
  dashboard on 127.0.0.1 (the next free port when the asked one is taken);
- ``auto`` or ``HOST:PORT`` joins a running cluster (``cluster/`` has launcher configs).

Ray's token authentication (``RAY_AUTH_MODE=token``, Ray 2.52+) is on for every cluster this
project starts, and a driver joining a cluster sends the token. Ray looks for the token in
``RAY_AUTH_TOKEN``, then the file ``RAY_AUTH_TOKEN_PATH``, then ``~/.ray/auth_token``;
:func:`ensure_auth_token` writes a new one to the default file with mode 0600 when there is
none (Ray's own generator writes it with the process umask, often 0644).

Before a search starts: every trial must fit on some node (CPUs, GPUs, memory), GPUs must
exist when trials ask for them, and on a multi-node cluster a local storage path must be
visible from every node (a probe file written by the driver, looked for on each node).
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import stat
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from search.config import ResourcesConfig
from search.storage import RunStorage
from trainers.config import TrainConfig
from trainers.errors import WenError

__all__ = [
    "RayAuthError",
    "RaySession",
    "alive_nodes",
    "cluster_requires_token",
    "default_token_path",
    "enable_token_auth",
    "ensure_auth_token",
    "free_port",
    "join_auth",
    "no_auth_warning",
    "resource_problems",
    "start_ray",
    "storage_problems",
    "unseen_storage_message",
]

_GIB = 1024**3
_AUTH_MODE = "RAY_AUTH_MODE"
_TOKEN_ENV = "RAY_AUTH_TOKEN"
_TOKEN_PATH_ENV = "RAY_AUTH_TOKEN_PATH"
_TOKEN_HELP = "https://docs.ray.io/en/latest/ray-security/token-auth.html"


class RayAuthError(WenError, RuntimeError):
    """Ray's token authentication cannot be set up as this project requires."""


@dataclass(frozen=True)
class RaySession:
    """How this process is connected to Ray."""

    started_here: bool
    dashboard_url: str | None
    address: str


def free_port(port: int, host: str = "127.0.0.1", tries: int = 100) -> int:
    """``port`` when nothing listens on it, else the next free one above it."""
    for candidate in range(port, min(port + tries, 65536)):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, candidate))
            except OSError:
                continue
            return candidate
    raise RuntimeError(f"no free port in {port}..{port + tries - 1} on {host}")


def default_token_path() -> Path:
    """Where Ray looks for the token when neither RAY_AUTH_TOKEN nor RAY_AUTH_TOKEN_PATH is set."""
    return Path.home() / ".ray" / "auth_token"


def _owner_only(path: Path) -> None:
    """Make a token file readable by its owner only (when this user owns it)."""
    info = path.stat()
    if info.st_mode & 0o077 and info.st_uid == os.getuid():
        path.chmod(stat.S_IRUSR | stat.S_IWUSR)


def ensure_auth_token(*, create: bool) -> Path | None:
    """The token file Ray will read (None when RAY_AUTH_TOKEN holds the token itself).

    With ``create``, a missing default file gets a fresh 256-bit token, written with mode
    0600 from the first byte (``O_CREAT`` with 0o600, not chmod after the fact); an existing
    token file of this user is narrowed to 0600. Without ``create`` a missing token is an error
    that says where to get one.
    """
    if os.environ.get(_TOKEN_ENV):
        return None
    custom = os.environ.get(_TOKEN_PATH_ENV)
    path = Path(custom).expanduser() if custom else default_token_path()
    if path.is_file() and path.read_text().strip():
        _owner_only(path)
        return path
    if custom or not create:
        where = f"{_TOKEN_PATH_ENV}={custom}" if custom else str(path)
        raise RayAuthError(
            f"there is no Ray authentication token at {where}: on the cluster's "
            f"head run `ray get-auth-token`, then store it here with `umask 077; ray get-auth-token "
            f"> {path}` (mode 0600) or pass it in {_TOKEN_ENV}; see {_TOKEN_HELP}"
        )
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # an empty file, or another process just wrote one
        if path.read_text().strip():
            _owner_only(path)
            return path
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
        os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(secrets.token_hex(32))  # what `ray get-auth-token --generate` writes
    return path


def _auth_mode_setting() -> str:
    return os.environ.get(_AUTH_MODE, "token").lower()


def _set_auth_mode(mode: str) -> None:
    """Set this process's Ray authentication mode (``token`` or ``disabled``).

    RAY_AUTH_MODE must be in the environment (Ray rejects it in ``_system_config``), and Ray's
    C++ config reads it when ``ray`` is imported, so it is refreshed here: otherwise Ray would
    keep the mode it read at import (and start a GCS in token mode without a token, say).
    """
    os.environ[_AUTH_MODE] = mode
    from ray._raylet import AuthenticationTokenLoader, Config

    Config.initialize("")  # what ray.init does when it turns token auth on by default
    AuthenticationTokenLoader.instance().reset_cache()  # a token loaded before may be stale


def enable_token_auth(*, create: bool) -> Path | None:
    """Turn token authentication on for this process and the Ray processes it starts.

    ``RAY_AUTH_MODE`` other than ``token`` is refused: a cluster this project starts always
    runs with token authentication.
    """
    if _auth_mode_setting() != "token":
        raise RayAuthError(
            f"{_AUTH_MODE}={os.environ[_AUTH_MODE]} is set, but wen starts Ray only with token "
            f"authentication, so that nobody who can reach a Ray port can run code: unset "
            f"{_AUTH_MODE} (or set it to token)"
        )
    path = ensure_auth_token(create=create)
    _set_auth_mode("token")
    return path


def gcs_address(address: str) -> str | None:
    """``auto`` or ``HOST:PORT`` as the GCS address Ray would connect to; None for a Ray
    Client address (``ray://``), which cannot be probed this way."""
    if address.startswith("ray://"):
        return None
    from ray._private.services import canonicalize_bootstrap_address_or_die

    return canonicalize_bootstrap_address_or_die(address)


def cluster_requires_token(address: str) -> bool | None:
    """Whether the cluster at ``address`` runs with token authentication; None if unknown.

    Asks the cluster's GCS for one key without a token: a cluster with token authentication
    refuses at once (``AuthenticationError``), one without answers. Leaves this process in
    token mode.
    """
    gcs = gcs_address(address)
    if gcs is None:
        return None
    from ray._raylet import GcsClient
    from ray.exceptions import AuthenticationError

    _set_auth_mode("disabled")
    try:
        GcsClient(address=gcs).internal_kv_get(b"session_name", b"session", timeout=10)
    except AuthenticationError:
        return True
    except Exception as exc:  # noqa: BLE001 - Ray raises RpcError, ConnectionError, TimeoutError...
        raise RayAuthError(
            f"cannot reach the Ray cluster at {address} (GCS {gcs}) to tell whether it uses "
            f"token authentication: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}; "
            "check --address and that the cluster is running"
        ) from None
    finally:
        _set_auth_mode("token")
    return False


def no_auth_warning(address: str) -> str:
    """What joining a cluster without token authentication exposes, and what to do."""
    return (
        f"warning: the Ray cluster at {address} runs WITHOUT token authentication: anyone who "
        "can reach its ports (GCS, dashboard and Jobs API) can run any code on every node as "
        "the user Ray runs as, and read the run's data and weights. Keep it on a private "
        f"network, or restart it with {_AUTH_MODE}=token on every node (Ray 2.52+; {_TOKEN_HELP})"
    )


def join_auth(address: str, say: Callable[[str], None] = print) -> None:
    """Set up this process to join the cluster at ``address`` the way that cluster runs.

    A cluster with token authentication gets the token (none: the error says where to get
    it); a cluster without it is joined with a loud warning about what that exposes. With a
    token at hand the driver joins in token mode either way (a cluster without authentication
    ignores it).
    """
    asked = _auth_mode_setting()
    if asked not in ("token", "disabled"):
        raise RayAuthError(f"{_AUTH_MODE}={asked} is not a Ray authentication mode: unset it")
    try:
        ensure_auth_token(create=False)
        missing = None
    except RayAuthError as err:
        missing = err
    needs = cluster_requires_token(address)
    if needs is False:
        say(no_auth_warning(address))
        if missing is not None or asked == "disabled":
            _set_auth_mode("disabled")
            return
    else:
        why = ("requires token authentication" if needs else "cannot be asked whether it uses "
               "token authentication (a Ray Client address), so wen sends a token")  # fmt: skip
        if asked == "disabled":
            raise RayAuthError(
                f"{_AUTH_MODE}=disabled is set, but the Ray cluster at {address} {why}: unset "
                f"{_AUTH_MODE} and provide the cluster's token"
            )
        if missing is not None:
            raise RayAuthError(f"the Ray cluster at {address} {why}, and {missing}")
    enable_token_auth(create=False)


def start_ray(
    address: str | None,
    *,
    dashboard_port: int = 8265,
    num_cpus: int | None = None,
    say: Callable[[str], None] = print,
) -> RaySession:
    """Start Ray in this process (``address`` None) or join a cluster; print the dashboard.

    A Ray started here runs with token authentication and creates the token when there is
    none (``~/.ray/auth_token``, mode 0600). A driver joining a cluster does what that cluster
    does (:func:`join_auth`): it sends the token to a cluster that needs one, and warns
    when the cluster runs without authentication.
    """
    import ray

    if address:
        join_auth(address, say)
        ctx = ray.init(address=address, logging_level=logging.WARNING)
        url = getattr(ctx, "dashboard_url", None) or None
        session = RaySession(False, f"http://{url}" if url and "://" not in url else url, address)
    else:
        enable_token_auth(create=True)
        port = free_port(dashboard_port)
        if port != dashboard_port:
            say(f"port {dashboard_port} on 127.0.0.1 is taken; the Ray dashboard uses {port}")
        ctx = ray.init(
            num_cpus=num_cpus,
            include_dashboard=True,
            dashboard_host="127.0.0.1",
            dashboard_port=port,
            logging_level=logging.WARNING,
        )
        session = RaySession(True, f"http://127.0.0.1:{port}", ctx.address_info.get("address", ""))
    if session.dashboard_url:
        say(f"Ray dashboard: {session.dashboard_url}")
    return session


def alive_nodes() -> list[dict[str, Any]]:
    """The cluster's live nodes as ``ray.nodes()`` reports them."""
    import ray

    return [n for n in ray.nodes() if n.get("Alive")]


def resource_problems(
    resources: ResourcesConfig, train: TrainConfig, nodes: list[dict[str, Any]]
) -> list[str]:
    """What stops a trial from ever being placed on ``nodes``; empty when it fits."""
    problems: list[str] = []
    total_gpus = sum(float(n.get("Resources", {}).get("GPU", 0)) for n in nodes)
    if resources.gpus > 0 and total_gpus == 0:
        problems.append(
            f"search.resources.gpus={resources.gpus:g} but the Ray cluster has no GPU: set "
            "search.resources.gpus=0, or join a cluster with GPU workers via --address"
        )
    if train.device == "cuda" and resources.gpus == 0:
        problems.append(
            "train.device=cuda but search.resources.gpus=0, so Ray gives trials no GPU: "
            "set search.resources.gpus (e.g. 1 or 0.5) or train.device=auto"
        )
    need = {"CPU": resources.cpus, "GPU": resources.gpus}
    if resources.memory_gb:
        need["memory"] = resources.memory_gb * _GIB
    fits = [
        n
        for n in nodes
        if all(float(n.get("Resources", {}).get(k, 0)) >= v for k, v in need.items() if v)
    ]
    if nodes and not fits and not problems:
        largest = max(
            nodes, key=lambda n: (n["Resources"].get("GPU", 0), n["Resources"].get("CPU", 0))
        )["Resources"]
        problems.append(
            f"no node can hold one trial (cpus={resources.cpus:g}, gpus={resources.gpus:g}, "
            f"memory_gb={resources.memory_gb}); the largest node has CPU={largest.get('CPU', 0):g}, "
            f"GPU={largest.get('GPU', 0):g}, memory_gb={largest.get('memory', 0) / _GIB:.1f}: "
            "lower search.resources or add bigger nodes"
        )
    return problems


def unseen_storage_message(uri: str, unseen: list[str]) -> str:
    """The error for a local run folder that some nodes cannot see."""
    return (
        f"the run folder {uri} is local to this machine, but Ray node(s) {', '.join(unseen)} "
        "cannot see it, and every trial's checkpoints and predictions must land in it: "
        "use a folder shared by every node (NFS mounted at the same path) or an "
        "s3:// / gs:// URI via --storage"
    )


def storage_problems(run: RunStorage, nodes: list[dict[str, Any]]) -> list[str]:
    """On a multi-node cluster, check that every node sees a local run folder."""
    if not run.local or len(nodes) <= 1:
        return []
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    probe_name = f".wen-probe-{uuid.uuid4().hex[:8]}"
    run.write_text(probe_name, "probe\n")
    probe = run.join(probe_name)

    @ray.remote(num_cpus=0)
    def sees(path: str) -> bool:
        import os

        return os.path.exists(path)

    try:
        checks = {
            n["NodeID"]: sees.options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)
            ).remote(probe)
            for n in nodes
        }
        seen = {node: bool(ray.get(ref, timeout=120)) for node, ref in checks.items()}
    finally:
        run.delete_file(probe_name)
    addresses = {n["NodeID"]: n.get("NodeManagerAddress", "?") for n in nodes}
    unseen = [f"{addresses[k]} ({k[:8]})" for k, ok in seen.items() if not ok]
    return [unseen_storage_message(run.uri, unseen)] if unseen else []
