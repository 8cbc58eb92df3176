"""The cluster configs in cluster/: launcher YAMLs valid for Ray's own schema, secure by
default (token auth, dashboard on 127.0.0.1), referencing only files that exist; the KubeRay
manifest well-formed with GPU workers and an entrypoint the real ``wen`` CLI accepts."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import typer.main
import yaml
from typer.testing import CliRunner

from search.cli import app

REPO = Path(__file__).resolve().parents[2]
CLUSTER = REPO / "cluster"
LAUNCHERS = ["aws-gpu.yaml", "gcp-gpu.yaml"]
# a local file_mounts source outside the repository: the user's Ray token, never committed
TOKEN_SOURCE = "~/.ray/auth_token"


def _ray_schema() -> dict[str, Any]:
    import ray.autoscaler

    path = Path(ray.autoscaler.__file__).parent / "ray-schema.json"
    return json.loads(path.read_text())


def _launcher(name: str) -> dict[str, Any]:
    return yaml.safe_load((CLUSTER / name).read_text())


def _commands(config: dict[str, Any], *keys: str) -> list[str]:
    return [c for key in keys for c in config.get(key, [])]


@pytest.mark.parametrize("name", LAUNCHERS)
def test_launcher_config_validates_against_rays_schema(name: str) -> None:
    config = _launcher(name)
    jsonschema.validate(config, _ray_schema())
    assert config["provider"]["type"] == name.split("-")[0]
    assert config["head_node_type"] in config["available_node_types"]


def test_schema_check_catches_a_bad_key() -> None:
    """The check above can fail: Ray's schema rejects an unknown top-level key."""
    config = {**_launcher("aws-gpu.yaml"), "head_comands": []}
    with pytest.raises(jsonschema.ValidationError, match="head_comands"):
        jsonschema.validate(config, _ray_schema())


@pytest.mark.parametrize("name", LAUNCHERS)
def test_launcher_references_only_repo_files(name: str) -> None:
    config = _launcher(name)
    for remote, local in config["file_mounts"].items():
        if local == TOKEN_SOURCE:
            assert remote == "~/.ray/auth_token"  # where Ray's nodes look for it
            continue
        assert not Path(local).is_absolute() and not local.startswith("~"), local
        assert (REPO / local).exists(), f"file_mounts source {local} is not in the repository"
    setup = " ".join(config["setup_commands"])
    assert "pip install -c constraints.txt -e ." in setup
    mentioned = set(re.findall(r"(?<![\w/.~-])([\w-]+\.(?:txt|toml|yaml|py|sh))\b", setup))
    for name_ in mentioned:
        assert (REPO / name_).exists(), f"setup commands use {name_}, missing from the repository"


@pytest.mark.parametrize("name", LAUNCHERS)
def test_launcher_is_secure_by_default(name: str) -> None:
    config = _launcher(name)
    starts = [
        c
        for c in _commands(config, "head_start_ray_commands", "worker_start_ray_commands")
        if "ray start" in c
    ]
    assert len(starts) == 2
    for command in starts:
        assert "RAY_AUTH_MODE=token ray start" in command, command
    head = next(c for c in starts if "--head" in c)
    assert "--dashboard-host=127.0.0.1" in head
    assert "0.0.0.0" not in (CLUSTER / name).read_text()
    assert any("chmod 600 ~/.ray/auth_token" in c for c in config["setup_commands"])


def test_launchers_have_gpu_workers() -> None:
    aws = _launcher("aws-gpu.yaml")["available_node_types"]
    assert re.match(r"(g|p)\d", aws["gpu_worker"]["node_config"]["InstanceType"])  # GPU families
    gcp = _launcher("gcp-gpu.yaml")["available_node_types"]["gpu_worker"]
    assert gcp["node_config"]["guestAccelerators"][0]["acceleratorCount"] >= 1
    assert gcp["resources"]["GPU"] >= 1


def _kuberay() -> dict[str, dict[str, Any]]:
    docs = list(yaml.safe_load_all((CLUSTER / "kuberay.yaml").read_text()))
    kinds = [d["kind"] for d in docs]
    assert len(set(kinds)) == len(kinds), kinds
    return {d["kind"]: d for d in docs}


def test_kuberay_manifest_kinds_and_gpu_workers() -> None:
    docs = _kuberay()
    assert docs["RayCluster"]["apiVersion"] == docs["RayJob"]["apiVersion"] == "ray.io/v1"
    cluster = docs["RayCluster"]["spec"]
    assert cluster["authOptions"] == {"mode": "token"}
    assert tuple(int(x) for x in cluster["rayVersion"].split(".")[:2]) >= (2, 52)  # token auth
    assert cluster["headGroupSpec"]["serviceType"] == "ClusterIP"
    for group in cluster["workerGroupSpecs"]:
        for container in group["template"]["spec"]["containers"]:
            res = container["resources"]
            assert (
                int(res["requests"]["nvidia.com/gpu"]) >= 1
                and int(res["limits"]["nvidia.com/gpu"]) >= 1
            )
    name = docs["RayCluster"]["metadata"]["name"]
    assert docs["RayJob"]["spec"]["clusterSelector"] == {"ray.io/cluster": name}
    assert docs["NetworkPolicy"]["spec"]["podSelector"]["matchLabels"] == {"ray.io/cluster": name}


def _entrypoint() -> list[str]:
    return shlex.split(_kuberay()["RayJob"]["spec"]["entrypoint"])


def test_kuberay_entrypoint_parses_with_the_wen_cli() -> None:
    argv = _entrypoint()
    assert argv[:2] == ["wen", "search"]
    search = typer.main.get_command(app).commands["search"]  # type: ignore[attr-defined]
    ctx = search.make_context("search", argv[2:])  # click's own parser: unknown options fail
    assert str(ctx.params["config"]) == "configs/mondal2021.yaml"
    assert ctx.params["address"] == "auto"
    assert ctx.params["storage"].startswith("s3://")
    with pytest.raises(Exception, match="No such option: --adress"):  # the parser can fail
        search.make_context("search", [*argv[2:], "--adress", "auto"])


def test_kuberay_entrypoint_dry_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The whole entrypoint against the real preset, with the pods' cache variables. The
    dataset and the weights live on the cluster's volume: a generated C-NMC tree stands in for
    the data, and the empty weight caches must be named backbone by backbone."""
    from trainers.data.synth import synthesize

    argv = _entrypoint()
    cluster = _kuberay()["RayCluster"]
    containers = [cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0],
                  *(g["template"]["spec"]["containers"][0] for g in cluster["spec"]["workerGroupSpecs"])]  # fmt: skip
    for container in containers:
        env = {e["name"]: e["value"] for e in container["env"]}
        assert env["HF_HOME"].startswith("/home/ray/wen-search/data/"), env  # on the volume
        assert env["TORCH_HOME"].startswith("/home/ray/wen-search/data/"), env
        monkeypatch.setenv("HF_HOME", str(tmp_path / "weights" / Path(env["HF_HOME"]).name))
        monkeypatch.setenv("TORCH_HOME", str(tmp_path / "weights" / Path(env["TORCH_HOME"]).name))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    root = synthesize(tmp_path / "C-NMC_Leukemia", "cnmc-kaggle", 4, 2, 32, seed=0)
    monkeypatch.chdir(REPO)
    result = CliRunner().invoke(app, [*argv[1:], "--dry-run", "--set", f"data.root={root}"])
    out = " ".join(result.output.split())
    assert "run folder: s3://" in out and f"dataset: {root} (cnmc-kaggle; classes hem, all)" in out
    assert result.exit_code == 2, result.output
    for backbone in (
        "vgg16",
        "legacy_xception",
        "mobilenetv1_100",
        "inception_resnet_v2",
        "densenet121",
    ):
        assert f"wen weights fetch {backbone}" in out, backbone
    assert str(tmp_path / "weights" / "huggingface") in out


def test_dockerfile_copies_only_existing_paths() -> None:
    for line in (CLUSTER / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY"):
            sources = [p for p in line.split()[1:-1] if not p.startswith("--")]
            for source in sources:
                assert (REPO / source).exists(), source


def test_local_cluster_script_usage() -> None:
    script = CLUSTER / "local_cluster.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    done = subprocess.run(["bash", str(script), "bogus"], capture_output=True, text=True)
    assert done.returncode == 2 and "start|stop|stop-worker N" in done.stderr
