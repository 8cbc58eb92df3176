"""Pretrained-weight caches for tests: random weights laid out exactly where a real download
leaves them, and a loopback server that answers like the Hugging Face hub and a plain URL host.

Use (a test with pytest's ``tmp_path`` and ``monkeypatch``)::

    sd = lay_out_cached_weights("test_resnet", tmp_path / "hf", tmp_path / "torch", seed=3)
    for key, value in cache_env(tmp_path / "hf", tmp_path / "torch").items():
        monkeypatch.setenv(key, value)
    model = create_model("test_resnet", 2, pretrained=True)
    assert torch.equal(model.backbone.conv1.weight, sd["conv1.weight"])

For a ``wen`` subprocess pass ``{**env, **cache_env(...)}`` as its environment.

The files hold what timm's real pretrained file holds: every tensor of the model built with
its pretrained head (``timm.create_model(name)``), in timm's layout (timm's Hugging Face copies,
torchvision-origin ones such as ``vgg16.tv_in1k`` included, are stored in timm's layout; the
URL-only ``legacy_xception`` file too, as timm loads it without a filter). Values are the
model's own initialisation from ``seed`` plus noise, so batch-norm statistics stay valid and
a model that did not load them cannot match by chance.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import unquote, urlparse

import torch

__all__ = [
    "FakeHub",
    "cache_env",
    "go_online",
    "hf_snapshot_file",
    "lay_out_cached_weights",
    "point_weights_url",
    "pretrained_tensors",
    "save_tensors",
    "torch_hub_file",
    "use_empty_caches",
]

_CACHE_VARS = ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE")


def cache_env(hf_home: Path, torch_home: Path) -> dict[str, str]:
    """Environment under which timm and huggingface_hub read exactly these two caches.

    ``HF_HUB_CACHE`` and ``HUGGINGFACE_HUB_CACHE`` win over ``HF_HOME``, so they are set too
    (to ``HF_HOME/hub``, the same folder): none left in the outer environment can win.
    """
    return {
        "HF_HOME": str(hf_home),
        "HF_HUB_CACHE": str(Path(hf_home) / "hub"),
        "HUGGINGFACE_HUB_CACHE": str(Path(hf_home) / "hub"),
        "TORCH_HOME": str(torch_home),
    }


def use_empty_caches(tmp_path: Path, monkeypatch: Any) -> tuple[Path, Path]:
    """Empty ``HF_HOME`` and ``TORCH_HOME`` under ``tmp_path``, set in the environment."""
    hf_home, torch_home = tmp_path / "hf", tmp_path / "torch"
    for key, value in cache_env(hf_home, torch_home).items():
        monkeypatch.setenv(key, value)
    return hf_home, torch_home


def pretrained_tensors(backbone: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors with the names, shapes and dtypes of ``backbone``'s pretrained file."""
    import timm

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = timm.create_model(backbone, pretrained=False)  # the pretrained head included
        out = {}
        for key, value in model.state_dict().items():
            value = value.detach().clone().contiguous()
            if key.endswith("running_var"):
                value = torch.rand(value.shape) + 0.5  # a variance stays positive
            elif value.is_floating_point():
                value = value + 0.01 * torch.randn(value.shape)
            out[key] = value
    return out


def save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> Path:
    """Write ``tensors`` as the file type its name says (.safetensors, else ``torch.save``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(tensors, str(path))
    else:
        torch.save(tensors, path)
    return path


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def hf_snapshot_file(
    repo: str, filename: str, tensors: dict[str, torch.Tensor], hub_cache: Path, commit: str
) -> Path:
    """``tensors`` as huggingface_hub's cache holds a downloaded file: the bytes in
    ``blobs/<sha256>``, ``refs/main`` naming ``commit``, and ``snapshots/<commit>/<filename>``
    a relative symlink to the blob."""
    root = Path(hub_cache) / ("models--" + repo.replace("/", "--"))
    (root / "blobs").mkdir(parents=True, exist_ok=True)
    tmp = save_tensors(tensors, root / "blobs" / f"incoming{Path(filename).suffix}")
    blob = root / "blobs" / _sha256(tmp)
    os.replace(tmp, blob)
    (root / "refs").mkdir(exist_ok=True)
    (root / "refs" / "main").write_text(commit)
    pointer = root / "snapshots" / commit / filename
    pointer.parent.mkdir(parents=True, exist_ok=True)
    if pointer.is_symlink() or pointer.exists():
        pointer.unlink()
    pointer.symlink_to(os.path.relpath(blob, pointer.parent))
    return pointer


def torch_hub_file(url: str, torch_home: Path) -> Path:
    """Where torch hub keeps ``url``'s file under ``torch_home``."""
    return Path(torch_home) / "hub" / "checkpoints" / os.path.basename(urlparse(url).path)


def lay_out_cached_weights(
    backbone: str, hf_home: Path, torch_home: Path, seed: int = 0
) -> dict[str, torch.Tensor]:
    """Write random pretrained weights of ``backbone`` where a real download leaves them and
    return them (timm's layout, the pretrained head included).

    Models with an ``hf_hub_id`` get ``HF_HOME/hub/models--ORG--NAME/{blobs,refs/main,
    snapshots/<commit>/model.safetensors}``; URL-only models (``legacy_xception``) get
    ``TORCH_HOME/hub/checkpoints/<the URL's file name>``. Run the code under test with
    :func:`cache_env` ``(hf_home, torch_home)``.
    """
    from trainers.weights import weight_source

    source = weight_source(backbone)
    if source is None:
        raise ValueError(f"timm has no pretrained weights for {backbone!r}: nothing to lay out")
    tensors = pretrained_tensors(backbone, seed)
    if source.hf_repo:
        commit = hashlib.sha1(f"{source.hf_repo}:{seed}".encode()).hexdigest()
        hf_snapshot_file(
            source.hf_repo, source.hf_filenames[0], tensors, Path(hf_home) / "hub", commit
        )
    else:
        assert source.url
        save_tensors(tensors, torch_hub_file(source.url, torch_home))
    return tensors


def go_online(monkeypatch: Any, hub: FakeHub, hf_home: Path, torch_home: Path) -> None:
    """Set the environment of an in-process download from ``hub`` into these caches:
    ``HF_ENDPOINT``, the cache variables, ``NO_PROXY`` for 127.0.0.1, and huggingface_hub's
    offline switch off (tests/conftest.py sets ``HF_HUB_OFFLINE=1``, read at its import)."""
    from huggingface_hub import constants

    for key, value in cache_env(hf_home, torch_home).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)


def point_weights_url(monkeypatch: Any, backbone: str, url: str) -> None:
    """Make timm's registered pretrained cfg of ``backbone`` (a URL-only model) name ``url``
    for the rest of the test (pytest's ``monkeypatch`` undoes it)."""
    import dataclasses

    from timm.models import _registry

    cfgs = _registry._model_pretrained_cfgs
    tag = _registry.get_pretrained_cfg(backbone).tag
    for key in (backbone, f"{backbone}.{tag}"):
        if key in cfgs:
            monkeypatch.setitem(cfgs, key, dataclasses.replace(cfgs[key], url=url))


# ------------------------------------------------------------------------- loopback hub


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's name
        return None  # keep test output clean

    def do_HEAD(self) -> None:  # noqa: N802 - http.server's name
        self._answer(body=False)

    def do_GET(self) -> None:  # noqa: N802
        self._answer(body=True)

    def _answer(self, body: bool) -> None:
        hub = self.server.hub
        path = unquote(urlparse(self.path).path)
        hub.requests.append((self.command, self.server.role, path))
        if self.server.role == "cdn":
            data = hub.blobs.get(path.lstrip("/"))
            self._send(200 if data is not None else 404, data or b"", {}, body)
            return
        if path in hub.url_files:
            self._send(200, hub.url_files[path], {}, body)
            return
        self._resolve(path, body)

    def _resolve(self, path: str, body: bool) -> None:
        """``/{repo_id}/resolve/{revision}/{filename}`` the way huggingface.co answers it."""
        hub = self.server.hub
        head, sep, rest = path.lstrip("/").partition("/resolve/")
        revision, _, filename = rest.partition("/")
        repo = hub.repos.get(head) if sep else None
        if repo is None:
            self._send(404, b"Repository not found", {"X-Error-Code": "RepoNotFound"}, body)
            return
        commit = repo["commit"]
        if revision not in ("main", commit):
            self._send(404, b"Revision not found", {"X-Error-Code": "RevisionNotFound"}, body)
            return
        sha = repo["files"].get(filename)
        if sha is None:
            headers = {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": commit}
            self._send(404, b"Entry not found", headers, body)
            return
        # an LFS file: a redirect to the CDN (another origin) carrying the file's metadata
        headers = {
            "X-Repo-Commit": commit,
            "X-Linked-Etag": f'"{sha}"',
            "X-Linked-Size": str(len(hub.blobs[sha])),
            "ETag": f'"{hashlib.sha1(sha.encode()).hexdigest()}"',
            "Location": f"{hub.cdn_url}/{sha}",
        }
        self._send(302, b"", headers, body)

    def _send(self, code: int, data: bytes, headers: dict[str, str], body: bool) -> None:
        self.send_response(code)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body and data:
            self.wfile.write(data)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, hub: FakeHub, role: str) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.hub = hub
        self.role = role


class FakeHub:
    """Two threaded HTTP servers on 127.0.0.1: a Hugging Face hub (``endpoint``; HEAD/GET
    ``/{repo}/resolve/{revision}/{file}`` answer 302 to the CDN with ``X-Repo-Commit``,
    ``X-Linked-Etag`` and ``X-Linked-Size``, as huggingface.co does for LFS files; unknown
    repos and files answer 404 with ``X-Error-Code``) that also serves plain URL files, and its
    CDN on another port (another origin, as the real one is). ``requests`` records
    ``(method, "hub"|"cdn", path)``.

    >>> with FakeHub() as hub:  # doctest: +SKIP
    ...     hub.add_hf_file("timm/test_resnet.r160_in1k", "model.safetensors", tensors)
    ...     url = hub.add_url_file("/files/xception-43020ad28.pth", tensors)
    """

    def __init__(self) -> None:
        self.repos: dict[str, dict[str, Any]] = {}
        self.blobs: dict[str, bytes] = {}
        self.url_files: dict[str, bytes] = {}
        self.requests: list[tuple[str, str, str]] = []
        self._servers = [_Server(self, "hub"), _Server(self, "cdn")]
        self._threads: list[threading.Thread] = []

    @property
    def endpoint(self) -> str:
        """The value for ``HF_ENDPOINT``."""
        return f"http://127.0.0.1:{self._servers[0].server_address[1]}"

    @property
    def cdn_url(self) -> str:
        return f"http://127.0.0.1:{self._servers[1].server_address[1]}"

    def __enter__(self) -> FakeHub:
        for server in self._servers:
            thread = threading.Thread(target=server.serve_forever, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)

    @staticmethod
    def _bytes(tensors: dict[str, torch.Tensor], suffix: str) -> bytes:
        folder = Path(tempfile.mkdtemp())
        try:
            return save_tensors(tensors, folder / f"file{suffix}").read_bytes()
        finally:
            shutil.rmtree(folder)

    def add_hf_file(self, repo: str, filename: str, tensors: dict[str, torch.Tensor]) -> str:
        """Serve ``tensors`` as ``filename`` of ``repo`` (at a fixed commit); returns the sha256."""
        data = self._bytes(tensors, Path(filename).suffix)
        sha = hashlib.sha256(data).hexdigest()
        self.blobs[sha] = data
        entry = self.repos.setdefault(
            repo, {"commit": hashlib.sha1(repo.encode()).hexdigest(), "files": {}}
        )
        entry["files"][filename] = sha
        return sha

    def add_url_file(self, path: str, tensors: dict[str, torch.Tensor]) -> str:
        """Serve ``tensors`` (``torch.save``) at ``path`` on the hub's host; returns the URL."""
        self.url_files[path] = self._bytes(tensors, Path(path).suffix)
        return self.endpoint + path
