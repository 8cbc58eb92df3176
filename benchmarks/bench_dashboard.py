"""``wen dashboard`` on a run of 200 trials: time to first render in headless Chromium.

The run folder holds what a search of 200 trials x 30 epochs leaves: the driver's live
records (written by ``search.live.LiveFeed`` itself, as Tune calls it) and ``config.yaml``.
Measured: the trials route alone (reading and assembling 200 records), and, by the page's own
``performance.now()`` marks from the start of navigation, its first render (the trial table)
and its complete render (curves, parallel coordinates and rungs too, once plotly.js has
loaded) in Playwright's Chromium. Target: under 2 s to first render on 2 cores.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import yaml

from trainers.run_layout import RUN_LAYOUT

TRIALS, EPOCHS = 200, 30


def write_run(storage: Path, name: str = "big") -> Path:
    """A run folder with ``TRIALS`` live trial records of ``EPOCHS`` epochs each."""
    import numpy as np

    from search.live import LiveFeed
    from search.storage import RunStorage

    from search.presets import config_path
    from search.run import load_search_config

    overrides = [f"name={name}", f"train.epochs={EPOCHS}", "search.scheduler.name=asha",
                 "search.folds=null"]  # fmt: skip
    config = load_search_config(str(config_path(Path("smoke"))[0]), overrides)
    (storage / name).mkdir(parents=True, exist_ok=True)
    (storage / name / RUN_LAYOUT.config).write_text(yaml.safe_dump(config.model_dump(mode="json")))
    feed = LiveFeed(config, RunStorage.open(str(storage), name), None)
    feed.setup()
    rng = np.random.default_rng(0)
    for i in range(TRIALS):
        trial = SimpleNamespace(
            trial_id=f"t{i:04d}", config={"optim.lr": float(10 ** rng.uniform(-5, -2))}
        )
        feed.on_trial_start(0, [], trial)
        for epoch in range(1, EPOCHS + 1):
            feed.records[trial.trial_id]["epochs"].append({
                "epoch": epoch, "val_wfs": float(rng.uniform(0.5, 0.9)),
                "val_auc": float(rng.uniform(0.5, 0.95)), "val_loss": float(rng.uniform(0.2, 1)),
                "lr_points": [float(v) for v in rng.uniform(1e-5, 1e-3, 8)],
            })  # fmt: skip
        feed.on_trial_result(0, [], trial, {"epoch": EPOCHS, "val_wfs": 0.7})
    return storage / name


def _first_render(url: str) -> float:
    from playwright.sync_api import sync_playwright

    from reports.browser import chromium_path

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox"])
        page = browser.new_page()
        page.goto(url, wait_until="commit")
        page.wait_for_selector("body[data-rendered]", timeout=60_000)
        # the page's own marks: milliseconds since navigation started (performance.now)
        table = float(page.get_attribute("body", "data-first-table")) / 1000
        complete = float(page.get_attribute("body", "data-rendered")) / 1000
        shown = page.eval_on_selector_all("tr[data-trial]", "rs => rs.length")
        browser.close()
    if shown != TRIALS:
        raise RuntimeError(f"the page showed {shown} trials, the run has {TRIALS}")
    return table, complete


def run() -> list[dict[str, Any]]:
    """Two rows: the trials route and the page's first render."""
    from reports._dashboard_data import LocalRun, trials_view
    from reports.dashboard import create_app, serve
    from search.raycluster import free_port

    with tempfile.TemporaryDirectory() as tmp:
        run_dir = write_run(Path(tmp))
        start = time.perf_counter()
        view = trials_view(LocalRun(run_dir), "big")
        route = time.perf_counter() - start
        assert len(view["rows"]) == TRIALS
        board = serve(create_app({"big": LocalRun(run_dir)}), port=free_port(8600), background=True)
        try:
            table, complete = _first_render(board.url)
        finally:
            board.stop()
    note = f"{TRIALS} trials x {EPOCHS} epochs of live records"
    return [
        {"name": "dashboard_trials_route_200", "value": route, "unit": "s", "target": "",
         "note": f"reports._dashboard_data.trials_view: {note}"},
        {"name": "dashboard_first_render_200", "value": table, "unit": "s", "target": "< 2",
         "note": f"navigation start until the trial table is drawn (headless Chromium; the page's own mark); {note}"},
        {"name": "dashboard_complete_render_200", "value": complete, "unit": "s", "target": "",
         "note": f"navigation start until the curves, parallel coordinates and rungs are drawn too (plotly.js, 4.6 MB, parsed); {note}"},
    ]  # fmt: skip


if __name__ == "__main__":
    for r in run():
        print(f"{r['name']:32s} {r['value']:8.3f} {r['unit']} {r['target']:5s} {r['note']}")
