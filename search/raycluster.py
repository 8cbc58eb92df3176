"""Starting or joining Ray, and the checks that must pass before any trial starts.

- With no address Ray starts in this process with the machine's CPUs and GPUs and the
  dashboard on 127.0.0.1 (the next free port when the asked one is taken);
- ``auto`` or ``HOST:PORT`` joins a running cluster (``cluster/`` has launcher configs).

Before a search starts: every trial must fit on some node (CPUs, GPUs, memory), GPUs must
exist when trials ask for them, and on a multi-node cluster a local storage path must be
visible from every node (a probe file written by the driver, looked for on each node).
"""

from __future__ import annotations

import logging
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from search.config import ResourcesConfig
from search.storage import RunStorage
from trainers.config import TrainConfig

__all__ = [
    "RaySession",
    "alive_nodes",
    "free_port",
    "resource_problems",
    "start_ray",
    "storage_problems",
    "unseen_storage_message",
]

_GIB = 1024**3


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


def start_ray(
    address: str | None,
    *,
    dashboard_port: int = 8265,
    num_cpus: int | None = None,
    say: Callable[[str], None] = print,
) -> RaySession:
    """Start Ray in this process (``address`` None) or join a cluster; print the dashboard."""
    import ray

    if address:
        ctx = ray.init(address=address, logging_level=logging.WARNING)
        url = getattr(ctx, "dashboard_url", None) or None
        session = RaySession(False, f"http://{url}" if url and "://" not in url else url, address)
    else:
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
        n for n in nodes if all(float(n.get("Resources", {}).get(k, 0)) >= v for k, v in need.items() if v)
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
