"""``wen dashboard``: the page of a smoke run in headless Chromium (Playwright driving Debian's
Chromium), its live update from the driver's records, and its loopback-only socket."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import yaml

from search.raycluster import free_port
from reports.dashboard import LOOPBACK, DashboardServer, create_app, serve
from reports._dashboard_data import LocalRun, ensemble_view, trials_view
from trainers.run_layout import RUN_LAYOUT
from wen_proc import listening_addresses

#: ``WEN_SCREENSHOT_DIR=docs`` writes the README's screenshots (otherwise a temporary folder)
SCREENSHOT_ENV = "WEN_SCREENSHOT_DIR"


def _board(runs: dict[str, Any]) -> DashboardServer:
    return serve(create_app(runs), port=free_port(8600), background=True)


def _open(browser: Any, board: DashboardServer) -> tuple[Any, list[str]]:
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    # nothing but the dashboard itself may be asked for: no CDN, no other host
    page.route(
        re.compile(r"^(?!" + re.escape(board.url.rstrip("/")) + ").*"),
        lambda route: (errors.append(f"off-host request {route.request.url}"), route.abort()),
    )
    page.goto(board.url)
    page.wait_for_selector("tr[data-trial]")
    return page, errors


def test_the_page_of_a_smoke_run_shows_every_trial_the_stops_and_the_ensemble(
    smoke_run: Path, browser: Any, tmp_path: Path
) -> None:
    shots = Path(os.environ.get(SCREENSHOT_ENV) or tmp_path)
    board = _board({"smoke": LocalRun(smoke_run)})
    try:
        page, errors = _open(browser, board)
        results = trials_view(LocalRun(smoke_run))["rows"]
        shown = page.eval_on_selector_all("tr[data-trial]", "rs => rs.map(r => r.dataset.trial)")
        assert sorted(shown) == sorted(r["trial_id"] for r in results)
        stopped = page.eval_on_selector_all(
            "tr[data-stopped=true]", "rs => rs.map(r => r.dataset.trial)"
        )
        assert sorted(stopped) == ["t_cnx", "t_res_b"]  # the smoke run's early-stopped trials
        assert "stopped at epoch 2" in page.text_content("tr[data-trial=t_res_b]")
        page.wait_for_selector("#curves .main-svg")
        page.wait_for_selector("#parcoords .main-svg")
        page.fill("#filter", "efficientnet")
        assert page.eval_on_selector_all("tr[data-trial]", "rs => rs.length") == 1
        page.fill("#filter", "")
        shots.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(shots / "dashboard-trials.png"), full_page=True)
        page.click("#tab-ensemble")
        page.wait_for_selector("#comparison tbody tr")
        methods = page.eval_on_selector_all(
            "#comparison tbody tr td:first-child", "cs => cs.map(c => c.textContent)"
        )
        expected = ensemble_view(LocalRun(smoke_run))
        assert set(methods) == {r["method"] for r in expected["comparison"]}
        assert "[" in page.text_content("#comparison tbody tr")  # intervals shown
        assert page.text_content("#chosen").startswith(f"Chosen: {expected['chosen']['method']}")
        page.wait_for_selector("#weights .main-svg")
        page.screenshot(path=str(shots / "dashboard-ensemble.png"), full_page=True)
        assert errors == []
    finally:
        board.stop()


class _Trial(SimpleNamespace):
    """What LiveFeed reads of a Tune trial."""


def test_a_new_epoch_appears_without_a_reload(
    tmp_path: Path, smoke_run: Path, browser: Any
) -> None:
    """The driver's callback (search.live.LiveFeed, as Tune calls it) writes a record; the
    open page shows the new epoch within a few seconds, without a reload."""
    from search.config import WenConfig
    from search.live import LiveFeed
    from search.storage import RunStorage

    run_dir = tmp_path / "live"
    run_dir.mkdir()
    shutil.copy(smoke_run / RUN_LAYOUT.config, run_dir / RUN_LAYOUT.config)
    raw = yaml.safe_load((run_dir / RUN_LAYOUT.config).read_text())
    raw.setdefault("search", {})["scheduler"] = {"name": "asha", "grace_cycles": 1}
    config = WenConfig.model_validate(raw)
    feed = LiveFeed(config, RunStorage.open(str(tmp_path), "live"), None)
    feed.setup()
    trial = _Trial(trial_id="t_live", config={"optim.lr": 1e-3})
    feed.on_trial_start(0, [], trial)
    feed.on_trial_result(0, [], trial, {"epoch": 1, "val_wfs": 0.5, "lr_points": [1e-4, 1e-3]})
    board = _board({"live": LocalRun(run_dir)})
    try:
        page, errors = _open(browser, board)
        assert page.get_attribute("tr[data-trial=t_live]", "data-epochs") == "1"
        page.evaluate("window.__kept = 'same page'")
        feed.on_trial_result(0, [], trial, {"epoch": 2, "val_wfs": 0.6, "lr_points": [1e-3, 1e-4]})
        page.wait_for_selector("tr[data-trial=t_live][data-epochs='2']", timeout=8000)
        assert page.evaluate("window.__kept") == "same page"  # the same page: no reload
        feed.on_trial_complete(0, [], trial)
        page.wait_for_selector("tr[data-trial=t_live][data-stopped=true]", timeout=8000)
        assert errors == []
    finally:
        board.stop()


def test_the_dashboard_listens_on_loopback_only(smoke_run: Path) -> None:
    board = _board({"smoke": LocalRun(smoke_run)})
    try:
        assert listening_addresses(board.port) == {LOOPBACK}
    finally:
        board.stop()


def test_no_route_changes_a_run(smoke_run: Path) -> None:
    from starlette.testclient import TestClient

    client = TestClient(create_app({"smoke": LocalRun(smoke_run)}))
    before = sorted(p.relative_to(smoke_run) for p in smoke_run.rglob("*"))
    assert client.get("/api/runs/smoke/trials").status_code == 200
    for route in ("/", "/api/runs", "/api/runs/smoke/trials", "/api/runs/smoke/ensemble"):
        for method in ("post", "put", "delete"):
            assert getattr(client, method)(route).status_code == 405, (method, route)
    assert client.get("/api/runs/nope/trials").status_code == 404
    assert sorted(p.relative_to(smoke_run) for p in smoke_run.rglob("*")) == before
    assert (
        client.get("/static/plotly.min.js")
        .headers["content-type"]
        .startswith("application/javascript")
    )


def test_a_remote_run_is_read_through_the_storage_layer(smoke_run: Path) -> None:
    """The page's data from a run that is not a local folder (pyarrow's in-memory filesystem
    behind ``RunStorage``, as ``s3://`` is): the same trials, stops and ensemble tables."""
    import pyarrow.fs as pafs
    from starlette.testclient import TestClient

    from search.storage import RunStorage

    remote = RunStorage(storage="mock://bucket/runs", name="remote", fs=pafs._MockFileSystem(),
                        path="bucket/runs/remote", local=False)  # fmt: skip
    for path in smoke_run.rglob("*"):
        if path.is_file() and path.suffix in (".csv", ".json", ".yaml"):
            remote.write_bytes(path.relative_to(smoke_run).as_posix(), path.read_bytes())
    local = trials_view(LocalRun(smoke_run), "smoke")
    seen = trials_view(remote, "smoke")
    key = ("trial_id", "status", "stopped_at", "epochs_run", "best_epoch", "params")
    assert [{k: r[k] for k in key} for r in seen["rows"]] == [
        {k: r[k] for k in key} for r in local["rows"]
    ]
    assert seen["rungs"] == local["rungs"]
    client = TestClient(create_app({"remote": remote}))
    ensemble = client.get("/api/runs/remote/ensemble").json()
    assert ensemble["comparison"] == ensemble_view(LocalRun(smoke_run))["comparison"]
    assert client.get("/api/runs").json()["runs"][0]["has_ensemble"] is True
