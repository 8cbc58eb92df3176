"""``wen dashboard``: one live, read-only page for a search and its ensemble.

Ray's dashboard has had no Tune view since Ray 2.0 (ray-project/ray#26325); TensorBoard
shows one plot per trial and optuna-dashboard the weight study alone. This page shows what
the tool is for: the trial table with every searched value, where the scheduler stopped each
trial, learning curves with their learning-rate trace, parameters against the search metric,
the rungs, and the ensemble's comparison with its intervals and weights.

A small Starlette app served by uvicorn. Plotly draws the figures; its JavaScript is served
from the ``plotly`` package's own bundled copy, so nothing is fetched from a CDN and the page
works offline. Every route is a GET that reads the run folder through
``reports._dashboard_data`` (no second source of truth, no route writes anything); the page
polls every 2 s, so a new epoch appears without a reload. It binds to 127.0.0.1 unless told
otherwise: the page shows data paths and configs.

>>> app = create_app({"smoke": LocalRun("runs/smoke")})  # doctest: +SKIP
>>> serve(app, port=8600)  # doctest: +SKIP
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reports._dashboard_data import LocalRun, RunSource, ensemble_view, run_summary, trials_view
from reports._dashboard_page import PAGE

__all__ = ["DashboardServer", "LOOPBACK", "LocalRun", "create_app", "plotly_js", "serve"]

LOOPBACK = "127.0.0.1"
#: How often the page asks for new data (milliseconds).
POLL_MS = 2000


def plotly_js() -> Path:
    """The plotly.js bundle that ships inside the ``plotly`` Python package (offline use)."""
    import plotly

    path = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    if not path.is_file():
        raise FileNotFoundError(
            f"plotly.js is missing from the plotly package ({path}); reinstall it with "
            "`pip install --force-reinstall plotly`"
        )
    return path


def create_app(
    runs: Mapping[str, RunSource] | Callable[[], Mapping[str, RunSource]],
    links: Mapping[str, str] | None = None,
) -> Any:
    """The Starlette app over ``runs`` (name -> source; a callable is asked on each request,
    so runs that appear under a storage folder are listed)."""
    from starlette.applications import Starlette
    from starlette.responses import FileResponse, HTMLResponse, JSONResponse
    from starlette.routing import Route

    listed: dict[str, Any] = {"at": -float("inf"), "runs": {}}

    def current() -> Mapping[str, RunSource]:
        # one listing serves a poll's requests (its run list and its tab): listing a storage
        # of runs costs a call per run on an object store
        if not callable(runs):
            return runs
        if time.monotonic() - listed["at"] > POLL_MS / 2000:
            listed.update(at=time.monotonic(), runs=runs())
        return listed["runs"]

    def source(request: Any) -> RunSource:
        from starlette.exceptions import HTTPException

        found = current().get(request.path_params["name"])
        if found is None:
            raise HTTPException(404, f"no run named {request.path_params['name']!r}")
        return found

    async def page(request: Any) -> HTMLResponse:
        return HTMLResponse(PAGE.replace("__POLL_MS__", str(POLL_MS)))

    async def script(request: Any) -> FileResponse:
        return FileResponse(plotly_js(), media_type="application/javascript")

    async def run_list(request: Any) -> JSONResponse:
        items = [run_summary(src, name) for name, src in sorted(current().items())]
        return JSONResponse({"runs": items, "links": dict(links or {})})

    async def trials(request: Any) -> JSONResponse:
        return JSONResponse(trials_view(source(request), request.path_params["name"]))

    async def ensemble(request: Any) -> JSONResponse:
        return JSONResponse(ensemble_view(source(request)))

    routes = [
        Route("/", page),
        Route("/static/plotly.min.js", script),
        Route("/api/runs", run_list),
        Route("/api/runs/{name}/trials", trials),
        Route("/api/runs/{name}/ensemble", ensemble),
    ]
    return Starlette(routes=routes)


@dataclass
class DashboardServer:
    """A running dashboard: its address, and how to stop it."""

    url: str
    host: str
    port: int
    server: Any
    thread: threading.Thread | None

    def stop(self) -> None:
        """Ask uvicorn to exit and wait for it."""
        self.server.should_exit = True
        if self.thread is not None:
            self.thread.join(timeout=10)


def serve(
    app: Any, *, host: str = LOOPBACK, port: int = 8600, background: bool = False
) -> DashboardServer:
    """Serve ``app`` with uvicorn on ``host:port``; in a daemon thread when ``background``
    (returns once it listens), else until Ctrl-C."""
    import uvicorn

    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    url = f"http://{host}:{port}/"
    if not background:
        server.run()
        return DashboardServer(url, host, port, server, None)
    thread = threading.Thread(target=server.run, name="wen-dashboard", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the dashboard did not start on {host}:{port}")
        time.sleep(0.05)
    return DashboardServer(url, host, port, server, thread)
