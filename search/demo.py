"""``wen demo``: the whole pipeline on synthetic data in a few CPU minutes.

Synthetic C-NMC data (DIR/data) -> search on local Ray with ASHA (DIR/run) -> ensemble stage
-> ONNX export -> report, then a short table of the methods' test scores with 95% intervals
and an honest verdict on whether the ensembles beat the best single member.

The pure pieces (:func:`format_comparison`, :func:`ensemble_verdict`) work on the frames
``wen ensemble`` writes, so they are tested without a search:

>>> import pandas as pd
>>> row = dict(split="test", wfs=0.8, wfs_low=0.7, wfs_high=0.9, ba=0.75, ba_low=0.6,
...            ba_high=0.85, auc=0.9, auc_low=0.8, auc_high=0.95, chosen=False)
>>> print(format_comparison(pd.DataFrame([dict(row, method="sap")]))[-1])
sap         0.800 [0.700, 0.900]  0.750 [0.600, 0.850]  0.900 [0.800, 0.950]
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from search.presets import preset_path
from trainers.run_layout import RUN_LAYOUT

__all__ = [
    "DEMO_CONFIG",
    "DemoResult",
    "demo_config",
    "ceiling_lines",
    "ensemble_verdict",
    "format_comparison",
    "run_demo",
]

#: The demo's config (a shipped preset); ``wen demo --set KEY=VALUE`` overrides it.
DEMO_CONFIG = preset_path("demo")
_METRICS = ("wfs", "ba", "auc")
_BASELINE = "best_single"


@dataclass
class DemoResult:
    """Where the demo put things and what it found."""

    out: Path
    run_dir: Path
    report: Path
    onnx: Path
    table: list[str]
    verdict: str
    seconds: dict[str, float] = field(default_factory=dict)
    ceiling: list[str] = field(default_factory=list)


def _cell(row: pd.Series, metric: str) -> str:
    return f"{row[metric]:.3f} [{row[f'{metric}_low']:.3f}, {row[f'{metric}_high']:.3f}]"


def format_comparison(comparison: pd.DataFrame, split: str = "test") -> list[str]:
    """Lines of a fixed-width table: method, then WFS, BA and AUC with their 95% intervals.

    The method the ensemble stage chose (on validation) is marked with ``*``.
    """
    rows = comparison[comparison["split"] == split]
    if rows.empty:
        raise ValueError(
            f"comparison.csv has no rows for split {split!r} (splits: "
            f"{sorted(comparison['split'].unique())}): does the dataset have a labelled test set?"
        )
    width = max(12, *(len(str(m)) + 4 for m in rows["method"]))  # room for " *" and a gap
    head = "method".ljust(width) + "  ".join(f"{m.upper():<20}" for m in _METRICS).rstrip()
    lines = [head]
    for _, row in rows.iterrows():
        name = f"{row['method']}{' *' if bool(row.get('chosen', False)) else ''}"
        lines.append(name.ljust(width) + "  ".join(_cell(row, m) for m in _METRICS))
    return lines


def ceiling_lines(info: dict | None, members: pd.DataFrame | None = None) -> list[str]:
    """What the scores can be compared with: the members' validation AUC (held-out subjects)
    and the generator's ceiling (the best possible classifier of the dataset's latent cues),
    overall and on the test split's own cells (the members' line alone when the dataset
    records no ceiling).

    >>> info = {"ceiling": {"accuracy": 0.9, "auc": 0.95, "auc_se": 0.001,
    ...         "n_monte_carlo": 200000}, "ceiling_realised": {"test": {"auc": 0.94}}}
    >>> for line in ceiling_lines(info):
    ...     print(line)
    ceiling: the best possible classifier of this dataset's latent cues reaches accuracy 0.900, AUC 0.950 (Monte Carlo, 200,000 cells, s.e. 0.001); on the test split's own cells AUC 0.940
    """
    lines = []
    if members is not None and "auc" in members and len(members):
        auc = members["auc"]
        lines.append(
            f"members: validation AUC {auc.min():.3f}-{auc.max():.3f} on held-out subjects "
            f"({len(members)} member(s), out-of-fold)"
        )
    ceiling = (info or {}).get("ceiling")
    if not ceiling:
        return lines
    line = (
        f"ceiling: the best possible classifier of this dataset's latent cues reaches accuracy "
        f"{ceiling['accuracy']:.3f}, AUC {ceiling['auc']:.3f} (Monte Carlo, "
        f"{ceiling['n_monte_carlo']:,} cells, s.e. {ceiling['auc_se']:.3f})"
    )
    test = ((info or {}).get("ceiling_realised") or {}).get("test")
    if test and test.get("auc") is not None:
        line += f"; on the test split's own cells AUC {test['auc']:.3f}"
    return lines + [line]


def ensemble_verdict(
    comparison: pd.DataFrame, comparisons: pd.DataFrame | None = None, split: str = "test"
) -> str:
    """Whether the ensembles beat the best single member on ``split`` WFS, said plainly.

    Counts the methods above ``best_single``, then judges the method chosen on validation by
    the paired subject-bootstrap interval of its WFS difference (``comparisons.csv``): only an
    interval above zero is called a win.
    """
    rows = comparison[comparison["split"] == split].set_index("method")
    if _BASELINE not in rows.index:
        raise ValueError(f"comparison.csv has no {_BASELINE} row on {split}: re-run wen ensemble")
    single = float(rows.loc[_BASELINE, "wfs"])
    others = rows.drop(index=_BASELINE)
    better = [m for m in others.index if float(others.loc[m, "wfs"]) > single]
    parts = [
        f"{len(better)} of {len(others)} ensemble methods have a higher {split} WFS than the "
        f"best single member ({single:.3f})" + (f": {', '.join(better)}." if better else ".")
    ]
    chosen = [m for m in rows.index if bool(rows.loc[m, "chosen"])]
    if chosen and chosen[0] != _BASELINE:
        name = chosen[0]
        diff = float(rows.loc[name, "wfs"]) - single
        sentence = f"The method chosen on validation, {name}, scores {diff:+.3f} WFS"
        paired = None
        if comparisons is not None and not comparisons.empty:
            sel = comparisons[
                (comparisons["split"] == split)
                & (comparisons["method"] == name)
                & (comparisons["baseline"] == _BASELINE)
                & (comparisons["metric"] == "wfs")
            ]
            paired = sel.iloc[0] if len(sel) else None
        if paired is not None:
            lo, hi = float(paired["diff_low"]), float(paired["diff_high"])
            if lo > 0:
                judged = "a real gain: the 95% paired interval of the difference is above zero"
            elif hi < 0:
                judged = "a real loss: the 95% paired interval of the difference is below zero"
            else:
                judged = "not distinguishable from it: the 95% paired interval includes zero"
            sentence += f" [{lo:+.3f}, {hi:+.3f}], {judged}."
        else:
            sentence += " (no paired interval available)."
        parts.append(sentence)
    elif chosen:
        parts.append("Validation chose the best single member itself: the ensembles did not help.")
    return " ".join(parts)


def demo_config(
    out: Path, overrides: list[str] | None = None, source: Path = DEMO_CONFIG
) -> object:
    """The demo config with its synthetic data written to ``out/data``; ``--set`` applied last."""
    from search.run import load_search_config

    sets = [f"data.synthetic_dir={(out / 'data').resolve()}", *(overrides or [])]
    return load_search_config(str(source), sets)


def _stopwatch(seconds: dict[str, float]) -> Callable[..., Any]:
    """``timed(stage, fn, *args, **kwargs)``: ``fn``'s result, its wall time in ``seconds``."""

    def timed(stage: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        start = time.monotonic()
        try:
            return fn(*args, **kwargs)
        finally:
            seconds[stage] = time.monotonic() - start

    return timed


def run_demo(
    out: str | Path,
    overrides: list[str] | None = None,
    *,
    source: Path = DEMO_CONFIG,
    num_cpus: int | None = None,
    gradcam: bool = True,
    say: Callable[[str], None] = print,
) -> DemoResult:
    """Data -> search -> ensemble -> export -> report into ``out``; return the summary.

    ``out/run`` must not hold a search yet (the demo starts one; pick another ``out``).
    """
    from ensemble.export import export_ensemble  # lazy: torch/onnx only when the demo runs
    from ensemble.run import run_ensemble
    from reports import build_report
    from search.config import WenConfig
    from search.run import run_search
    from trainers.data.synth import ensure_synthetic, read_synthetic_info

    out = Path(out).expanduser().resolve()
    config = demo_config(out, overrides, source)
    assert isinstance(config, WenConfig)
    seconds: dict[str, float] = {}
    timed = _stopwatch(seconds)

    assert config.data.synthetic is not None, "the demo config needs data.synthetic"
    data = timed("data", ensure_synthetic, config.data.synthetic, config.data.synthetic_dir)
    say(f"[demo] synthetic C-NMC dataset: {data}")
    outcome = timed(
        "search",
        run_search,
        config,
        storage=str(out),
        name="run",
        num_cpus=num_cpus,
        command=f"wen demo --out {out}",
        say=say,
    )
    if outcome.errors:
        raise RuntimeError(
            f"{outcome.errors} demo trial(s) errored; see {outcome.run.join(RUN_LAYOUT.results_csv)}"
        )
    run_dir = out / "run"
    timed("ensemble", run_ensemble, run_dir, config.ensemble, say=say)
    onnx = Path(timed("export", export_ensemble, run_dir, say=say)) / "ensemble.onnx"
    report = timed(
        "report", build_report, run_dir, gradcam=gradcam, device="cpu", progress=False, say=say
    )

    comparison = pd.read_csv(run_dir / RUN_LAYOUT.comparison)
    paired_path = run_dir / RUN_LAYOUT.comparisons
    paired = pd.read_csv(paired_path) if paired_path.is_file() else None
    members = pd.read_csv(run_dir / RUN_LAYOUT.members_table)
    return DemoResult(
        out=out,
        run_dir=run_dir,
        report=Path(report) / "report.html",
        onnx=onnx,
        table=format_comparison(comparison),
        verdict=ensemble_verdict(comparison, paired),
        seconds=seconds,
        ceiling=ceiling_lines(read_synthetic_info(data), members),
    )
