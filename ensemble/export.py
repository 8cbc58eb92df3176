"""``wen export RUN``: the chosen (or a named) ensemble as one self-contained model folder.

``RUN/model/`` (or ``--out``) holds:

* ``manifest.json``: class names, the pre-processing a client must apply (decode to RGB, centre
  crop, resize size and filter, channel order, scale, mean/std), the members with backbones,
  weights and files, the method and its threshold, validation and test metrics with 95%
  intervals (``RUN/ensemble/comparison.csv``), the measured export parity and package versions;
* ``members/<trial_id>/model.safetensors`` + ``config.json``: each fold network's weights and
  the trial config that rebuilds it (``trainers.trained.load_trained_model``; nothing pickled);
* ``ensemble.onnx``: one graph, pre-processed image tensor in (``image``: float32
  [batch, 3, S, S], RGB in [0, 1]), weighted class probabilities out (``probs``), dynamic batch;
* ``ensemble.pt``: the same graph as TorchScript (``torch.jit.load``).

The graph is :mod:`ensemble._graph`; the export checks onnxruntime and TorchScript against
eager PyTorch on random inputs and refuses to finish when they differ by more than 1e-4.

>>> from ensemble.export import export_ensemble
>>> model_dir = export_ensemble("runs/demo")                     # doctest: +SKIP
>>> sorted(p.name for p in model_dir.iterdir())                  # doctest: +SKIP
['ensemble.onnx', 'ensemble.pt', 'manifest.json', 'members']
"""

from __future__ import annotations

import contextlib
import io
import json
import posixpath
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ensemble.combiners import Combiner, weighted_average
from trainers._atomic import atomic_write_json, staged_folder
from trainers.errors import WenError
from trainers.metrics import METRIC_KEYS
from trainers.run_layout import (
    MODEL_CONFIG,
    MODEL_WEIGHTS,
    RUN_LAYOUT,
    MemberFileError,
    publish_member,
    read_member,
)

if TYPE_CHECKING:
    from torch import nn

__all__ = [
    "FORMAT_VERSION",
    "PARITY_ATOL",
    "ExportError",
    "ExportSpec",
    "export_ensemble",
    "load_ensemble_module",
    "load_export_spec",
    "read_manifest",
]

#: 2: the combination rule is ``manifest["combiner"]`` (``ensemble.combiners``)
FORMAT_VERSION = 2
#: Largest |probability difference| allowed between onnxruntime / TorchScript and eager PyTorch.
PARITY_ATOL = 1e-4
ONNX_FILE = "ensemble.onnx"
TORCHSCRIPT_FILE = "ensemble.pt"
MANIFEST_FILE = "manifest.json"
#: the members' networks, in the models folder's format (trainers.run_layout)
MEMBERS_DIR = "members"
INPUT_NAME = "image"
OUTPUT_NAME = "probs"
_VERSIONED = (
    "wen-search",
    "torch",
    "timm",
    "onnx",
    "onnxscript",
    "onnxruntime",
    "safetensors",
    "numpy",
    "pillow",
    "scikit-learn",
)


class ExportError(WenError, ValueError):
    """A run that cannot be exported, or an export that failed its checks; says what to do."""


@dataclass
class ExportSpec:
    """What ``RUN/ensemble/`` says about one method: members, weights, threshold, stacker."""

    run_dir: Path
    method: str
    chosen_method: str
    class_names: list[str]
    members: list[dict[str, Any]]  # name, trial_ids, backbone, weight (graph order)
    dropped: list[dict[str, Any]] = field(default_factory=list)
    threshold: float | None = None
    combiner: Combiner = field(default_factory=weighted_average)
    #: chosen.json's operating point (rule, threshold, test rates) when this is the chosen method
    operating_point: dict[str, Any] | None = None
    #: chosen.json's temperature (applied to the ensemble's probabilities) for the chosen method
    temperature: float | None = None


def _graph_members(
    members: list[dict[str, Any]], weights: dict[str, float], method: str, combiner: Combiner
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The members the graph holds and those left out for a zero weight (unless the combiner
    keeps every member)."""
    kept, dropped = [], []
    for m in members:
        weight = float(weights[m["name"]])
        row = {
            "name": m["name"],
            "trial_ids": list(m["trial_ids"]),
            "backbone": m["backbone"],
            "weight": weight,
        }
        if weight <= 0 and not combiner.keeps_zero_weight_members:
            dropped.append({**row, "why": f"weight 0 under {method}: left out of the graph"})
        else:
            kept.append(row)
    return kept, dropped


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ExportError(f"{path}: cannot read {what} ({exc}); re-run `wen ensemble`") from None


def load_export_spec(run_dir: str | Path, method: str | None = None) -> ExportSpec:
    """Read ``RUN/ensemble/chosen.json`` and ``weights.json`` for ``method`` (default: the
    chosen one). Members with weight 0 are left out of the graph (``dropped``), unless the
    method's combiner keeps them (a stacker: its weights are importances and its coefficients
    cover every member)."""
    run_dir = Path(run_dir)
    ens = run_dir / RUN_LAYOUT.ensemble
    if not run_dir.is_dir():
        raise ExportError(
            f"run folder {run_dir} does not exist; pass the folder `wen search` wrote"
        )
    chosen_path, weights_path = run_dir / RUN_LAYOUT.chosen, run_dir / RUN_LAYOUT.ensemble_weights
    if not chosen_path.is_file() or not weights_path.is_file():
        raise ExportError(
            f"{ens} has no chosen.json/weights.json: the ensemble has not been fitted yet; run "
            f"`wen ensemble {run_dir}` first, then export"
        )
    chosen = _read_json(chosen_path, "the chosen ensemble")
    table = _read_json(weights_path, "the ensemble weights")
    methods = table.get("methods", {})
    name = method or chosen["method"]
    if name not in methods:
        from ensemble.methods import METHODS

        hint = (
            f"{name!r} is an ensemble method but was not fitted in this run; re-run "
            f"`wen ensemble {run_dir} --methods ...` including it"
            if name in METHODS
            else f"unknown method {name!r}"
        )
        raise ExportError(f"{hint}; methods fitted in {weights_path}: {', '.join(methods)}")
    entry = methods[name]
    # the chosen method is exported at the operating point chosen for it (chosen.json)
    is_chosen = name == chosen["method"]
    try:
        combiner = Combiner.from_json(entry["combiner"])
    except (KeyError, TypeError) as exc:
        raise ExportError(
            f"{weights_path}: method {name!r} has no readable combiner ({exc!r} missing); it was "
            f"written by an older wen: re-run `wen ensemble {run_dir}` (the study resumes)"
        ) from None
    members, dropped = _graph_members(table["members"], entry["weights"], name, combiner)
    if not members:
        raise ExportError(f"{name}: every member has weight 0 in {weights_path}; nothing to export")
    return ExportSpec(
        run_dir=run_dir,
        method=name,
        chosen_method=chosen["method"],
        class_names=list(chosen["class_names"]),
        members=members,
        dropped=dropped,
        threshold=chosen.get("threshold") if is_chosen else entry.get("threshold"),
        combiner=combiner,
        operating_point=chosen.get("operating_point") if is_chosen else None,
        temperature=chosen.get("temperature") if is_chosen else None,
    )


# ------------------------------------------------------------------------------ manifest


def _metrics(run_dir: Path, method: str) -> dict[str, Any]:
    """comparison.csv's rows of ``method``: {split: {metric: {value, low, high}}, how}."""
    import pandas as pd

    path = run_dir / RUN_LAYOUT.comparison
    if not path.is_file():
        raise ExportError(f"{path} is missing; re-run `wen ensemble {run_dir}`")
    table = pd.read_csv(path)
    out: dict[str, Any] = {}
    for _, row in table[table["method"] == method].iterrows():
        split = {
            k: {"value": row.get(k), "low": row.get(f"{k}_low"), "high": row.get(f"{k}_high")}
            for k in METRIC_KEYS
            if k in row
        }
        split["how"] = row.get("how")
        out[str(row["split"])] = split
    return out


def _versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {}
    for name in _VERSIONED:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def _preprocessing(crop: Mapping[str, Any], size: int) -> dict[str, Any]:
    return {
        "function": "trainers.data.cache.preprocess_image (training used the same)",
        "decode": "PIL.Image.open(path).convert('RGB')",
        "crop": {
            "kind": "centred square",
            "fraction": crop.get("fraction"),
            "size": crop.get("size"),
            "rule": "fraction: that share of the shorter side, rounded; size: a fixed side; "
            "box left/top = (side_of_image - side) // 2",
        },
        "resize": {
            "size": [size, size],
            "interpolation": "bilinear",
            "antialias": True,
            "library": "PIL.Image.resize(..., Image.Resampling.BILINEAR)",
        },
        "channel_order": "RGB",
        "layout": "NCHW",
        "dtype": "float32",
        "scale": "uint8 / 255 -> [0, 1]",
        "mean": [0.0, 0.0, 0.0],
        "std": [1.0, 1.0, 1.0],
        "normalisation": "inside the graph, per member (members[].mean/std); feed [0, 1] values",
    }


def read_manifest(model_dir: str | Path) -> dict[str, Any]:
    """``MODEL_DIR/manifest.json``, checked to be an export of this format."""
    path = Path(model_dir) / MANIFEST_FILE
    if not path.is_file():
        raise ExportError(
            f"{path} does not exist: {model_dir} is not an exported model folder; create one "
            "with `wen export RUN`"
        )
    manifest = _read_json(path, "the model manifest")
    if manifest.get("format") != "wen-ensemble" or manifest.get("format_version") != FORMAT_VERSION:
        raise ExportError(
            f"{path}: format {manifest.get('format')!r} version {manifest.get('format_version')!r}"
            f", this wen reads 'wen-ensemble' version {FORMAT_VERSION}; re-export the run"
        )
    return manifest


# ------------------------------------------------------------------------------ the module


def load_ensemble_module(
    model_dir: str | Path, manifest: Mapping[str, Any] | None = None
) -> nn.Module:
    """The eager PyTorch ensemble of an exported model folder, rebuilt from its safetensors
    files and trial configs (``trainers.trained.load_trained_model``; nothing unpickled)."""
    from trainers.trained import TrainedModelError, load_trained_model  # lazy: torch, timm

    model_dir = Path(model_dir)
    manifest = manifest or read_manifest(model_dir)
    networks = {}
    for m in manifest["members"]:
        for f in m["files"]:
            try:
                trained = load_trained_model(model_dir / f["config"], model_dir / f["weights"])
            except TrainedModelError as exc:
                raise ExportError(f"member {m['name']}: {exc}") from None
            networks[f["trial_id"]] = trained.model
    return _module(manifest, networks)


def _module(manifest: Mapping[str, Any], networks: Mapping[str, nn.Module]) -> nn.Module:
    """The ensemble module the manifest describes, on fold networks by trial id."""
    from ensemble._graph import MemberNet, create_ensemble_module

    size = int(manifest["preprocessing"]["resize"]["size"][0])
    nets = [
        MemberNet(
            [networks[f["trial_id"]] for f in m["files"]],
            m["mean"],
            m["std"],
            m["input_size"],
            size,
        )
        for m in manifest["members"]
    ]
    return create_ensemble_module(
        nets,
        Combiner.from_json(manifest["combiner"]),
        [m["weight"] for m in manifest["members"]],
        len(manifest["class_names"]),
        manifest.get("temperature"),
    )


def _copy_fold(spec: ExportSpec, member: str, tid: str, out: Path) -> tuple[Any, dict[str, str]]:
    """One fold network: loaded (checked), copied into ``out/members``; and its files entry."""
    from trainers.trained import TrainedModelError, load_trained_model  # lazy: torch, timm

    try:
        src = read_member(spec.run_dir, tid)
        trained = load_trained_model(src.config, src.weights)
    except (MemberFileError, TrainedModelError) as exc:
        raise ExportError(f"member {member} (trial {tid}): {exc}") from None
    if trained.class_names != spec.class_names:
        raise ExportError(
            f"{src.config}: class names {trained.class_names} differ from the "
            f"ensemble's {spec.class_names}; export a run whose trials share classes"
        )
    # the export's members/ folder has the models folder's format
    dest = publish_member(out, tid, src.weights, src.config.read_bytes(), models=MEMBERS_DIR)
    entry = {
        "trial_id": tid,
        "weights": posixpath.join(dest, MODEL_WEIGHTS),
        "config": posixpath.join(dest, MODEL_CONFIG),
    }
    return trained, entry


def _members_manifest(
    spec: ExportSpec, out: Path, say: Callable[[str], None]
) -> tuple[list[dict[str, Any]], dict[str, Any], int, dict[str, nn.Module]]:
    """Copy each fold network into ``out/members`` (checking it loads), and describe members.

    Returns the members' manifest entries, the shared crop, the export size (the largest
    member input size; members trained smaller resize inside the graph) and the loaded fold
    networks by trial id.
    """
    entries, crops, networks = [], {}, {}
    n_folds = sum(len(m["trial_ids"]) for m in spec.members)
    say(f"loading {n_folds} fold network(s) of {len(spec.members)} member(s)")
    for m in spec.members:
        files, sizes, trained = [], set(), None
        for tid in m["trial_ids"]:
            trained, entry = _copy_fold(spec, m["name"], tid, out)
            networks[tid] = trained.model
            crops[tid] = trained.config.data.crop.model_dump(mode="json")
            sizes.add(int(trained.config.data.input_size))
            files.append(entry)
        assert trained is not None
        if len(sizes) != 1:
            raise ExportError(
                f"member {m['name']}: its fold trials have different input sizes "
                f"{sorted(sizes)}; folds of one configuration must share it"
            )
        cfg = trained.config
        entries.append(
            {
                **m,
                "input_size": sizes.pop(),
                "mean": list(trained.mean),
                "std": list(trained.std),
                "head": cfg.model.head,
                "files": files,
            }
        )
    distinct = {json.dumps(c, sort_keys=True) for c in crops.values()}
    if len(distinct) != 1:
        raise ExportError(
            f"the members were trained on different crops ({crops}); one exported graph has one "
            "pre-processing: export a method whose members share data.crop (wen ensemble "
            "--candidates with such trials)"
        )
    return (entries, next(iter(crops.values())), max(e["input_size"] for e in entries), networks)


def _onnx_export(module: nn.Module, example: Any, path: Path, say: Callable[[str], None]) -> str:
    """Export with the dynamo exporter (the default since torch 2.9); fall back to the
    TorchScript-based one if a backbone does not trace with ``torch.export``."""
    import torch

    weights_bytes = sum(t.numel() * t.element_size() for t in module.state_dict().values())
    external = weights_bytes > 1_800_000_000  # protobuf's 2 GB limit: weights beside the graph
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                (example,),
                str(path),
                dynamo=True,
                verbose=False,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                external_data=external,
                dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1, max=65536)}},
            )
        return "torch.onnx.export(dynamo=True)"
    except Exception as exc:  # noqa: BLE001 - any exporter failure tries the other exporter
        first = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        say(f"dynamo ONNX export failed ({first}); trying the TorchScript-based exporter")
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                (example,),
                str(path),
                dynamo=False,
                opset_version=18,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            )
        return "torch.onnx.export(dynamo=False, opset 18)"
    except Exception as exc:  # noqa: BLE001
        raise ExportError(
            f"ONNX export failed with both exporters (dynamo: {first}; TorchScript-based: "
            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); a member "
            "backbone uses an operation ONNX cannot express: export a method without it"
        ) from None


def _trace(module: nn.Module, example: Any, path: Path) -> None:
    import torch

    # torch.jit is deprecated in favour of torch.export, but TorchScript is still what C++ and
    # mobile runtimes load; the warnings say nothing the user can act on
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(module, example, check_trace=False)
        traced.save(str(path))


def onnx_session(path: Path) -> Any:
    """An onnxruntime session on the best available provider (CUDA when present, else CPU)."""
    import onnxruntime as ort

    wanted = ("CUDAExecutionProvider", "CPUExecutionProvider")
    providers = [p for p in wanted if p in ort.get_available_providers()]
    return ort.InferenceSession(str(path), providers=providers)


def _parity(module: nn.Module, out: Path, size: int, batches: Sequence[int]) -> dict[str, Any]:
    """Max |probability difference| of onnxruntime and TorchScript against eager PyTorch."""
    import torch

    session = onnx_session(out / ONNX_FILE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scripted = torch.jit.load(str(out / TORCHSCRIPT_FILE), map_location="cpu")
    gen = torch.Generator().manual_seed(0)
    worst = {"onnxruntime": 0.0, "torchscript": 0.0}
    for b in batches:
        x = torch.rand(b, 3, size, size, generator=gen)
        with torch.no_grad():
            ref = module(x).numpy()
            ts = scripted(x).numpy()
        ort_out = session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0]
        worst["onnxruntime"] = max(worst["onnxruntime"], float(np.abs(ort_out - ref).max()))
        worst["torchscript"] = max(worst["torchscript"], float(np.abs(ts - ref).max()))
    return {
        "max_abs_diff_vs_eager": worst,
        "batches": list(batches),
        "atol": PARITY_ATOL,
        "input": "uniform random [0, 1] images, seed 0",
    }


@contextlib.contextmanager
def _staging(out: Path) -> Iterator[Path]:
    """A temp folder beside ``out`` that replaces it only when the export succeeded."""
    if out.exists() and any(out.iterdir()) and not (out / MANIFEST_FILE).is_file():
        raise ExportError(
            f"{out} exists and is not an exported model folder (no {MANIFEST_FILE}); pass "
            "--out a new or empty folder"
        )
    # the old export stays in place until the new one is complete (trainers._atomic)
    with staged_folder(out, "exported model", then="run `wen export` again") as tmp:
        yield tmp


def export_ensemble(
    run_dir: str | Path,
    method: str | None = None,
    out_dir: str | Path | None = None,
    say: Callable[[str], None] = print,
) -> Path:
    """Export ``method`` (default: ``chosen.json``'s) of ``RUN/ensemble/`` to ``out_dir``
    (default ``RUN/model``); return the model folder. See the module docs for its contents."""
    import torch

    spec = load_export_spec(run_dir, method)
    out = Path(out_dir) if out_dir is not None else spec.run_dir / RUN_LAYOUT.export
    metrics = _metrics(spec.run_dir, spec.method)
    with _staging(out) as tmp:
        members, crop, size, networks = _members_manifest(spec, tmp, say)
        manifest = _manifest(spec, members, crop, size, metrics)
        for d in spec.dropped:
            say(f"leaving out {d['name']} ({d['backbone']}): {d['why']}")
        # the networks just loaded from the copied files (load_ensemble_module rebuilds the same)
        module = _module(manifest, networks)
        example = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(1))
        say(f"exporting {spec.method} ({len(members)} member(s), input {size}x{size}) to ONNX")
        exporter = _onnx_export(module, example, tmp / ONNX_FILE, say)
        say("tracing TorchScript")
        _trace(module, example, tmp / TORCHSCRIPT_FILE)
        manifest["files"] = _files(tmp, exporter)
        manifest["parity"] = _checked_parity(module, tmp, size)
        atomic_write_json(tmp / MANIFEST_FILE, manifest)
    worst = manifest["parity"]["max_abs_diff_vs_eager"]
    say(
        f"exported {spec.method} to {out} (onnxruntime max |diff| {worst['onnxruntime']:.2e}, "
        f"TorchScript {worst['torchscript']:.2e})"
    )
    return out


def _manifest(
    spec: ExportSpec,
    members: list[dict[str, Any]],
    crop: Mapping[str, Any],
    size: int,
    metrics: dict[str, Any],
) -> dict[str, Any]:
    """The manifest, less the files and parity the export adds once they exist."""
    from trainers.metrics import positive_index

    k = len(spec.class_names)
    pos = positive_index(spec.class_names, k)
    return {
        "format": "wen-ensemble",
        "format_version": FORMAT_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "run": str(spec.run_dir.resolve()),
        "method": spec.method,
        "chosen_method": spec.chosen_method,
        "class_names": spec.class_names,
        "positive_class": spec.class_names[pos] if k == 2 else None,
        "threshold": spec.threshold,
        "decision": _decision(spec, pos),
        "operating_point": spec.operating_point,
        "temperature": spec.temperature,
        "combine": spec.combiner.description
        + (
            ""
            if spec.temperature is None
            else f"; then softmax(log p / T), T = {spec.temperature:.4f}"
        ),
        "combiner": spec.combiner.to_json(),
        "input": {
            "name": INPUT_NAME,
            "shape": ["batch", 3, size, size],
            "dtype": "float32",
            "layout": "NCHW",
            "channel_order": "RGB",
            "range": [0.0, 1.0],
        },
        "output": {
            "name": OUTPUT_NAME,
            "shape": ["batch", k],
            "meaning": "ensemble class probabilities in class_names order",
        },
        "preprocessing": _preprocessing(crop, size),
        "members": members,
        "dropped_members": spec.dropped,
        "metrics": metrics,
        "versions": _versions(),
    }


def _decision(spec: ExportSpec, pos: int) -> str:
    """The decision rule a client applies to ``probs``, in words."""
    if spec.threshold is None or len(spec.class_names) != 2:
        return "argmax of probs"
    rule = f"{spec.class_names[pos]} when probs[:, {pos}] >= threshold, else the other class"
    point = spec.operating_point
    if point and point.get("rule") != "argmax":
        rule += f" (operating point: {point['how']}, on {point['threshold_fitted_on']})"
    return rule


def _files(folder: Path, exporter: str) -> dict[str, Any]:
    """The manifest's ``files``: the graphs, how the ONNX one was made and its opsets."""
    import onnx

    opset = {
        o.domain or "ai.onnx": o.version
        for o in onnx.load(str(folder / ONNX_FILE), load_external_data=False).opset_import
    }
    return {
        "onnx": ONNX_FILE,
        "onnx_exporter": exporter,
        "onnx_opset": opset,
        "torchscript": TORCHSCRIPT_FILE,
        "members": f"{MEMBERS_DIR}/<trial_id>/",
    }


def _checked_parity(module: nn.Module, folder: Path, size: int) -> dict[str, Any]:
    """The measured parity of both exported graphs; an error when one is off by > 1e-4."""
    parity = _parity(module, folder, size, (1, 5))
    bad = {k: v for k, v in parity["max_abs_diff_vs_eager"].items() if not v <= PARITY_ATOL}
    if bad:
        raise ExportError(
            f"exported graph differs from eager PyTorch by {bad} (must be <= {PARITY_ATOL}); "
            "this is a bug in the exporter or a backbone op: report it with the run"
        )
    return parity
