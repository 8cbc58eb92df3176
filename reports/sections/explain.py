"""Section 4, Grad-CAM: the members' and the chosen ensemble's maps on test cells that the
ensemble classifies correctly and at least one member wrongly."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from reports import figures as figs
from reports._inputs import MethodPredictions, MissingInput
from reports.gradcam import (
    GradCamError,
    find_gradcam_target,
    gradcam_maps,
    load_trial_model,
    resize_map,
)
from reports.render import Note, Text
from reports.sections._common import (
    ReportContext,
    SubsectionTable,
    positive_class,
    predicted_labels,
)
from reports.tables import write_table

__all__ = ["KEY", "LABEL", "SUBSECTIONS", "TITLE", "gradcam_examples"]

TITLE = "Grad-CAM: members and the ensemble"
KEY = "gradcam"
LABEL = "Grad-CAM"


@dataclass
class _Cases:
    """The test cells to explain and what their maps need of the chosen method."""

    method: str
    test: MethodPredictions
    members: Sequence[Any]  # the ensemble's members (RunInputs.ensemble_members)
    labels: list[str]  # the members' display names, in the test predictions' order
    weights: dict[str, float]  # member name -> its weight in the chosen method
    picked: list[int]  # rows of `test`
    names: Sequence[str]  # class names

    @property
    def ids(self) -> list[str]:
        return [str(self.test.sample_ids[i]) for i in self.picked]

    @property
    def classes(self) -> list[int]:
        return [int(self.test.y[i]) for i in self.picked]


@dataclass
class _Maps:
    """Grad-CAM maps of every member's fold models, and the layers they were taken at."""

    by_member: dict[str, list[np.ndarray]] = field(default_factory=dict)  # per fold [n, d, d]
    layers: list[dict[str, Any]] = field(default_factory=list)
    display: np.ndarray | None = None  # the input images at the largest input size
    size: int = 0

    def member_maps(self, members: Sequence[Any]) -> list[np.ndarray]:
        """One [n, size, size] stack per member, in ``members`` order."""
        # a member trained on several folds: the mean of its fold models' maps
        return [
            np.mean(
                [
                    np.stack([resize_map(m, self.size) for m in fold])
                    for fold in self.by_member[member.name]
                ],
                axis=0,
            )
            for member in members
        ]


def _select_cases(
    y: np.ndarray, member_pred: np.ndarray, ens_pred: np.ndarray, ens_conf: np.ndarray, n: int
) -> list[int]:
    """Cells the chosen ensemble gets right and at least one member wrong: the most members
    wrong first, then the ensemble's confidence; classes taken in turn."""
    wrong = (member_pred != y[None, :]).sum(axis=0)
    ok = np.flatnonzero((y >= 0) & (ens_pred == y) & (wrong > 0))
    ranked = sorted(ok, key=lambda i: (-wrong[i], -ens_conf[i], i))
    by_class: dict[int, list[int]] = {}
    for i in ranked:
        by_class.setdefault(int(y[i]), []).append(int(i))
    picked: list[int] = []
    while len(picked) < n and any(by_class.values()):
        for c in sorted(by_class):
            if by_class[c] and len(picked) < n:
                picked.append(by_class[c].pop(0))
    return picked


def _cases(ctx: ReportContext) -> _Cases:
    if not ctx.gradcam:
        raise MissingInput("Grad-CAM was switched off (--no-gradcam)")
    run = ctx.run
    chosen = run.chosen
    method = str(chosen.get("method"))
    test = run.predictions("test")
    if method not in test.methods:
        raise MissingInput(f"the chosen method {method!r} has no test probabilities here")
    members = run.ensemble_members
    weights = {m["name"]: float(m.get("weight", 0.0)) for m in chosen.get("members", [])}
    pos = positive_class(run)
    ens = test.methods[method]
    ens_pred = predicted_labels(ens, test.thresholds.get(method), pos)
    labels = list(test.members)
    member_pred = np.stack([test.members[n].argmax(axis=1) for n in labels])
    picked = _select_cases(test.y, member_pred, ens_pred, ens.max(axis=1), ctx.gradcam_images)
    if not picked:
        raise MissingInput(
            f"no test cell is classified correctly by {method} and wrongly by a member"
        )
    return _Cases(method, test, members, labels, weights, picked, run.class_names)


def _all_maps(ctx: ReportContext, cases: _Cases) -> _Maps:
    maps = _Maps()
    jobs = [(m, t) for m in cases.members for t in m.trial_ids]
    bar = tqdm(
        total=len(jobs) * len(cases.picked), desc="Grad-CAM", unit="map", disable=not ctx.progress
    )
    try:
        for member, trial in jobs:
            _add_trial_maps(ctx, cases, member, trial, maps, bar)
    finally:
        bar.close()
    return maps


def _add_trial_maps(
    ctx: ReportContext, cases: _Cases, member: Any, trial: str, maps: _Maps, bar: Any
) -> None:
    """Load one fold model of ``member`` (the model is freed on return) and add its maps."""
    run = ctx.run
    ids, classes = cases.ids, cases.classes
    try:
        loaded = load_trial_model(run.model_meta(trial), run.model_weights(trial), ctx.device)
    except GradCamError as exc:
        raise MissingInput(str(exc)) from None
    try:
        images = np.stack([loaded.image(s) for s in ids])
    except FileNotFoundError as exc:
        raise MissingInput(str(exc)) from None
    if maps.display is None or loaded.input_size > maps.size:
        maps.display, maps.size = images, loaded.input_size
    target = find_gradcam_target(loaded.model, loaded.input_size)
    fold = []
    for j in range(len(ids)):  # one image at a time: bounded memory for big backbones
        fold.append(
            gradcam_maps(loaded.model, loaded.tensor(images[j : j + 1]), [classes[j]], target)[0]
        )
        bar.update()
    maps.by_member.setdefault(member.name, []).append(np.stack(fold))
    maps.layers.append(
        {
            "member": run.member_label(member),
            "trial_id": trial,
            "backbone": loaded.backbone,
            "target_layer": target.name,
            "feature_map": "x".join(str(s) for s in target.shape[1:]),
            "input_size": loaded.input_size,
        }
    )


def _weights(cases: _Cases) -> np.ndarray:
    """The chosen method's member weights, normalised (equal where they sum to zero)."""
    w = np.array([cases.weights.get(m.name, 0.0) for m in cases.members])
    if w.sum() <= 0:
        w = np.ones(len(cases.members))
    return w / w.sum()


def _explanation(
    ctx: ReportContext, cases: _Cases, layers: list[dict[str, Any]], w: np.ndarray
) -> list[Any]:
    """A note on flat (1x1) maps, the text on what the maps are, and the layers' table."""
    flat = [
        f"{r['member']} ({r['feature_map']})" for r in layers if r["feature_map"].endswith("x1x1")
    ]
    blocks: list[Any] = (
        [
            Note(
                f"{', '.join(flat)}: the feature map is 1x1 at this input size, so the map is flat; "
                "Grad-CAM needs a larger data.input_size to localise"
            )
        ]
        if flat
        else []
    )
    return blocks + [
        Text(
            f"Test cells that the chosen ensemble (**{cases.method}**) classifies correctly "
            "and at least one member gets wrong. Each map is Grad-CAM (pytorch_grad_cam) for "
            "the true class at the layer listed below; the ensemble's map is the members' maps "
            f"averaged with the ensemble's weights ({', '.join(f'{wi:.3f}' for wi in w)}). "
            "Panel titles give each model's probability of the true class."
        ),
        write_table(
            pd.DataFrame(layers),
            "gradcam_layers",
            ctx.tables,
            "Grad-CAM target layer of each member (rule: the last module with a 4-D "
            "output in the feature pass)",
        ),
    ]


def _case_figures(
    ctx: ReportContext,
    cases: _Cases,
    display: np.ndarray,
    member_maps: list[np.ndarray],
    ensemble_map: np.ndarray,
) -> list[Any]:
    """One figure per picked cell: the input, each member's map and the ensemble's."""
    test, names, method, labels = cases.test, cases.names, cases.method, cases.labels
    ids, classes = cases.ids, cases.classes
    blocks: list[Any] = []
    for j, i in enumerate(cases.picked):
        panels = [
            (f"{labels[k]}", test.members[labels[k]][i], member_maps[k][j])
            for k in range(len(cases.members))
        ]
        panels.append((f"ensemble {method}", test.methods[method][i], ensemble_map[j]))
        fig = _gradcam_figure(display[j], panels, classes[j], names, ids[j])
        blocks.append(
            ctx.figure(
                fig,
                f"gradcam_{j + 1:02d}",
                f"Grad-CAM, test cell `{ids[j]}` (subject {test.subject_ids[i]}, "
                f"true class {names[classes[j]]})",
            )
        )
    return blocks


def _gradcam_figure(
    image: np.ndarray,
    panels: list[tuple[str, np.ndarray, np.ndarray]],
    true: int,
    names: Sequence[str],
    sample_id: str,
) -> Any:
    n = len(panels) + 1
    fig = figs._figure(2.6 * n, 3.2)
    axes = fig.subplots(1, n, squeeze=False)[0]
    axes[0].imshow(image)
    axes[0].set_title(f"input\ntrue: {names[true]}", fontsize=8)
    for ax, (title, probs, cam) in zip(axes[1:], panels):
        right = int(np.argmax(probs)) == true
        ax.imshow(image)
        ax.imshow(
            cam,
            cmap="jet",
            alpha=0.45,
            vmin=0.0,
            vmax=1.0,
            extent=(-0.5, image.shape[1] - 0.5, image.shape[0] - 0.5, -0.5),
        )
        short = title if len(title) <= 28 else title[:26] + "..."
        ax.set_title(
            f"{short}\nP({names[true]})={probs[true]:.2f} {'right' if right else 'WRONG'}",
            fontsize=7,
            color="black" if right else "tab:red",
        )
    for ax in axes:
        ax.set_axis_off()
    fig.suptitle(sample_id, fontsize=8)
    return fig


def gradcam_examples(ctx: ReportContext) -> list[Any]:
    """Grad-CAM of every member and of the chosen ensemble (the members' maps, weighted) on up
    to ``ctx.gradcam_images`` test cells the ensemble gets right and a member wrong."""
    cases = _cases(ctx)
    maps = _all_maps(ctx, cases)
    member_maps = maps.member_maps(cases.members)
    w = _weights(cases)
    ensemble_map = np.tensordot(w, np.stack(member_maps), axes=1)
    assert maps.display is not None
    return _explanation(ctx, cases, maps.layers, w) + _case_figures(
        ctx, cases, maps.display, member_maps, ensemble_map
    )


SUBSECTIONS: SubsectionTable = ((None, gradcam_examples),)
