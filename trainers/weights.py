"""Where each backbone's ImageNet weights live, whether they are here, and fetching them.

timm reads a backbone's pretrained weights from one of two caches, and this module owns
both layouts (nothing else spells them):

- the Hugging Face hub cache (``HF_HUB_CACHE``, else ``HF_HOME/hub``, else
  ``~/.cache/huggingface/hub``) for every model whose pretrained cfg has an ``hf_hub_id``:
  ``models--ORG--NAME/snapshots/<commit>/model.safetensors``;
- torch hub's ``checkpoints/`` folder (``torch.hub.get_dir()``: ``TORCH_HOME/hub``, else
  ``~/.cache/torch/hub``) for URL-only models such as ``legacy_xception``: the URL's file name.

Training never downloads (:mod:`trainers.models` only ever hands timm an explicit file);
:func:`fetch_weights` (``wen weights fetch``) is the one place that does, and
:func:`missing_weight_problems` is what a search checks on the driver before any trial.

>>> weight_source("legacy_xception").kind
'url'
>>> weight_source("test_resnet").hf_repo
'timm/test_resnet.r160_in1k'
>>> grid = {"model.backbone": {"type": "grid", "values": ["vgg16", "resnet50"]}}
>>> backbones_needing_weights("densenet121", True, None, grid)
['vgg16', 'resnet50']
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from trainers.errors import WenError

__all__ = [
    "NO_IMAGENET_WEIGHTS",
    "WeightSource",
    "WeightsFetchError",
    "backbones_needing_weights",
    "config_backbones",
    "fetch_command",
    "fetch_weights",
    "hf_hub_cache",
    "missing_weight_problems",
    "torch_hub_checkpoints",
    "weight_source",
]

#: Backbones built by this project rather than timm: no ImageNet weights exist for them.
NO_IMAGENET_WEIGHTS = ("alnet",)

_BACKBONE_KEY = "model.backbone"
_PRETRAINED_KEY = "model.pretrained"
_PRETRAINED_PATH_KEY = "model.pretrained_path"
# timm's own names (timm/models/_hub.py): a .bin file is looked for as .safetensors first
_HF_TORCH_FILE = "pytorch_model.bin"
_HF_SAFE_FILE = "model.safetensors"


class WeightsFetchError(WenError, RuntimeError):
    """A backbone's weights could not be downloaded; the message names the source and the fix."""


def hf_hub_cache() -> Path:
    """The Hugging Face hub cache huggingface_hub uses, read from the environment now.

    huggingface_hub reads it once at import; reading it here at call time lets tests and
    notebooks set ``HF_HOME`` / ``HF_HUB_CACHE`` afterwards.
    """
    explicit = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return Path(os.path.expandvars(explicit)).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache"), "huggingface"
    )
    return Path(os.path.expandvars(home)).expanduser() / "hub"


def torch_hub_checkpoints() -> Path:
    """torch hub's ``checkpoints/`` folder (``TORCH_HOME/hub/checkpoints`` by default)."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints"


def _hf_filenames(hf_hub_filename: str | None) -> tuple[str, ...]:
    """The files timm tries in the repo, in its order (safetensors before a pickled .bin)."""
    name = hf_hub_filename or _HF_TORCH_FILE
    if name.endswith(".safetensors"):
        return (name,)
    safe = _HF_SAFE_FILE if name == _HF_TORCH_FILE else name[: -len(".bin")] + ".safetensors"
    return (safe, name) if name.endswith(".bin") else (name,)


@dataclass(frozen=True)
class WeightSource:
    """Where timm gets one backbone's pretrained weights from, and where they are cached.

    ``kind`` is ``"hf-hub"`` (the Hugging Face repo ``hf_repo`` at ``hf_revision``, files tried
    in the order of ``hf_filenames``) or ``"url"`` (``url``, cached in torch hub's folder).
    """

    backbone: str
    pretrained_tag: str | None
    kind: str
    hf_repo: str | None = None
    hf_revision: str | None = None
    hf_filenames: tuple[str, ...] = ()
    url: str | None = None

    @property
    def torch_hub_file(self) -> Path | None:
        """Where torch hub keeps the URL's file (None without a URL)."""
        if not self.url:
            return None
        return torch_hub_checkpoints() / os.path.basename(urlparse(self.url).path)

    @property
    def hf_repo_folder(self) -> Path | None:
        """The repo's folder in the Hugging Face cache (None without a repo)."""
        if not self.hf_repo:
            return None
        return hf_hub_cache() / ("models--" + self.hf_repo.replace("/", "--"))

    def cached(self) -> Path | None:
        """The cached weight file timm would load, or None; never touches the network."""
        if self.hf_repo:
            from huggingface_hub import try_to_load_from_cache

            for fname in self.hf_filenames:
                found = try_to_load_from_cache(
                    self.hf_repo, fname, cache_dir=str(hf_hub_cache()), revision=self.hf_revision
                )
                if isinstance(found, str) and Path(found).is_file():
                    return Path(found)
        hub_file = self.torch_hub_file
        if hub_file is not None and hub_file.is_file():
            return hub_file
        return None

    def places(self) -> list[str]:
        """Where :meth:`cached` looks, in words (for messages)."""
        out = []
        if self.hf_repo:
            out.append(f"Hugging Face cache {self.hf_repo_folder} (repo {self.hf_repo})")
        if self.torch_hub_file is not None:
            out.append(f"torch hub cache {self.torch_hub_file}")
        return out


def weight_source(backbone: str) -> WeightSource | None:
    """Where timm's default pretrained weights of ``backbone`` come from; None when timm has none.

    ``backbone`` may carry a pretrained tag (``vgg16.tv_in1k``).
    """
    import timm

    if backbone in NO_IMAGENET_WEIGHTS:
        return None
    try:
        cfg = timm.get_pretrained_cfg(backbone)
    except RuntimeError:  # a known architecture with an unknown tag
        return None
    if cfg is None or not (cfg.hf_hub_id or cfg.url):
        return None
    if cfg.hf_hub_id:
        repo, _, revision = cfg.hf_hub_id.partition("@")
        return WeightSource(
            backbone,
            cfg.tag,
            "hf-hub",
            hf_repo=repo,
            hf_revision=revision or None,
            hf_filenames=_hf_filenames(cfg.hf_hub_filename),
            url=cfg.url or None,
        )
    return WeightSource(backbone, cfg.tag, "url", url=cfg.url)


# ------------------------------------------------------------------------------- fetching


def _hf_offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.is_offline_mode())


def _fetch_hf(source: WeightSource, progress: bool) -> Path:
    """``hf_hub_download`` of the first file timm would use; HF_ENDPOINT read now."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RemoteEntryNotFoundError,
    )

    assert source.hf_repo is not None
    endpoint = os.environ.get("HF_ENDPOINT") or None
    where = endpoint or "https://huggingface.co"
    if _hf_offline():
        raise WeightsFetchError(
            f"{source.backbone}: HF_HUB_OFFLINE is set, so huggingface_hub refuses to download "
            f"{source.hf_repo}; run the fetch with HF_HUB_OFFLINE=0 (e.g. `HF_HUB_OFFLINE=0 "
            f"wen weights fetch {source.backbone}`)"
        )
    missing: list[str] = []
    for fname in source.hf_filenames:
        try:
            found = hf_hub_download(
                source.hf_repo,
                fname,
                revision=source.hf_revision,
                cache_dir=str(hf_hub_cache()),
                endpoint=endpoint,
                tqdm_class=None if progress else _silent_tqdm(),
            )
        except (
            RemoteEntryNotFoundError
        ):  # timm then tries the next file (a .bin after .safetensors)
            missing.append(fname)
            continue
        except LocalEntryNotFoundError as exc:  # no connection (a subclass of EntryNotFoundError)
            raise WeightsFetchError(
                f"{source.backbone}: cannot reach {where} to download {source.hf_repo}/{fname} "
                f"({_first_line(exc)}); check the network, a proxy (HTTPS_PROXY) or HF_ENDPOINT"
            ) from None
        except (HfHubHTTPError, OSError) as exc:
            raise WeightsFetchError(
                f"{source.backbone}: downloading {source.hf_repo}/{fname} from {where} failed "
                f"({type(exc).__name__}: {_first_line(exc)}); check the repo name, HF_TOKEN for "
                "a gated repo, or HF_ENDPOINT"
            ) from None
        return Path(str(found))
    raise WeightsFetchError(
        f"{source.backbone}: the repo {source.hf_repo} on {where} has none of {missing}; "
        "timm's pretrained cfg names files the repo does not hold"
    )


def _fetch_url(source: WeightSource, progress: bool) -> Path:
    """``torch.hub.download_url_to_file`` into torch hub's checkpoints folder (temp file, then rename)."""
    import torch

    assert source.url is not None and source.torch_hub_file is not None
    dest = source.torch_hub_file
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(source.url, str(dest), progress=progress)
    except OSError as exc:  # URLError, HTTPError and a full disk are all OSErrors
        raise WeightsFetchError(
            f"{source.backbone}: downloading {source.url} to {dest} failed ({_first_line(exc)}); "
            "check the network or a proxy (HTTPS_PROXY), or download the file by hand into "
            f"{dest.parent}"
        ) from None
    return dest


def fetch_weights(backbone: str, progress: bool = True) -> tuple[Path, bool]:
    """Download ``backbone``'s ImageNet weights into the cache timm reads; ``(path, downloaded)``.

    Weights already cached are not downloaded again (``downloaded`` is False). Models with an
    ``hf_hub_id`` go to the Hugging Face cache through ``huggingface_hub.hf_hub_download``
    (which honours ``HF_ENDPOINT`` and ``HF_TOKEN``); URL-only models go to torch hub's
    ``checkpoints/`` folder. Raises :class:`WeightsFetchError` naming the source and the fix.
    """
    source = weight_source(backbone)
    if source is None:
        raise WeightsFetchError(_no_weights_message(backbone))
    found = source.cached()
    if found is not None:
        return found, False
    if source.kind == "hf-hub":
        return _fetch_hf(source, progress), True
    return _fetch_url(source, progress), True


def _silent_tqdm() -> type:
    """huggingface_hub's own progress bar, switched off (``hf_hub_download(tqdm_class=...)``)."""
    from huggingface_hub.utils import tqdm as hf_tqdm

    class _Silent(hf_tqdm):  # type: ignore[misc,valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

    return _Silent


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# ---------------------------------------------------------------------- what a config needs


def _spec_field(spec: Any, name: str) -> Any:
    """A field of a search dimension given as a ``SpaceSpec`` or as a plain mapping."""
    return spec.get(name) if isinstance(spec, Mapping) else getattr(spec, name, None)


def _candidates(base: Any, space: Mapping[str, Any] | None, key: str) -> list[Any]:
    """The values ``key`` can take in some trial: the choice/grid values when searched, else ``base``."""
    spec = (space or {}).get(key)
    if spec is None:
        return [base]
    if _spec_field(spec, "type") in ("choice", "grid"):
        return list(_spec_field(spec, "values") or [])
    return [base]


def backbones_needing_weights(
    backbone: str,
    pretrained: bool,
    pretrained_path: str | Path | None,
    space: Mapping[str, Any] | None = None,
) -> list[str]:
    """The backbones some trial loads ImageNet weights of from the cache, in order, once each.

    ``space`` maps dotted keys to dimensions (``SpaceSpec`` objects or ``{"type", "values"}``
    mappings). A searched ``model.backbone`` replaces ``backbone`` in every trial, so the
    searched values count and the base value does not; weights come from the cache when
    ``model.pretrained`` is (or can be searched to) true and no ``model.pretrained_path``
    (base or searched) gives them instead.
    """
    if not any(bool(v) for v in _candidates(pretrained, space, _PRETRAINED_KEY)):
        return []
    if all(v not in (None, "") for v in _candidates(pretrained_path, space, _PRETRAINED_PATH_KEY)):
        return []
    names = [str(v) for v in _candidates(backbone, space, _BACKBONE_KEY)]
    return list(dict.fromkeys(names))


def config_backbones(config: Any) -> list[str]:
    """:func:`backbones_needing_weights` of a trial or whole-run config (duck-typed: ``model``
    plus an optional ``search.space``, so this module needs nothing from ``search``)."""
    model = config.model
    search = getattr(config, "search", None)
    space = getattr(search, "space", None) if search is not None else None
    return backbones_needing_weights(model.backbone, model.pretrained, model.pretrained_path, space)


def fetch_command(backbones: list[str] | str) -> str:
    """The ``wen weights fetch`` command line that downloads ``backbones``."""
    names = [backbones] if isinstance(backbones, str) else list(backbones)
    return "wen weights fetch " + " ".join(names)


def _no_weights_message(backbone: str) -> str:
    if backbone in NO_IMAGENET_WEIGHTS:
        return (
            f"model.backbone={backbone}: {backbone} has no ImageNet weights: set "
            f"model.pretrained=false, or model.pretrained_path to weights saved from a {backbone} run"
        )
    return (
        f"model.backbone={backbone}: timm knows no pretrained weights for {backbone}: set "
        "model.pretrained=false, or model.pretrained_path to a weights file of this backbone"
    )


def _missing_message(source: WeightSource) -> str:
    name = source.backbone
    msg = (
        f"model.backbone={name}: its ImageNet weights are not in the local cache (looked in: "
        f"{'; '.join(source.places())}), and training never downloads: run `{fetch_command(name)}` "
        "here, or on a machine with network access with the same HF_HOME and TORCH_HOME and copy "
        "those folders here"
    )
    if source.kind == "url" and source.torch_hub_file is not None:
        msg += (
            f"; or download {source.url} by hand into {source.torch_hub_file.parent}/ (as "
            f"{source.torch_hub_file.name})"
        )
    return msg + "; or set model.pretrained_path to a weights file of this backbone"


def missing_weight_problems(config: Any) -> list[str]:
    """One problem per backbone the config's trials load cached ImageNet weights of, when the
    weights are missing or do not exist; each names the ``wen weights fetch`` command (and, for
    URL-only models, the torch hub folder the file belongs in). Empty when every trial can start.

    ``config`` is a trial or whole-run config (``model``, optional ``search.space``). Backbones
    timm does not know are left to the config checks, which name them already.
    """
    import timm

    problems = []
    for name in config_backbones(config):
        if name not in NO_IMAGENET_WEIGHTS and not timm.is_model(name):
            continue
        source = weight_source(name)
        if source is None:
            problems.append(_no_weights_message(name))
        elif source.cached() is None:
            problems.append(_missing_message(source))
    return problems
