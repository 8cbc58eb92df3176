"""Shared test set-up: few threads, no network, a private cache folder per session, and
``wen`` subprocesses with a private HOME (tests/search and tests/faults start them)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from wen_proc import WenProcess

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


@pytest.fixture(autouse=True, scope="session")
def _few_threads() -> None:
    try:
        import torch
    except ImportError:  # pragma: no cover
        return
    torch.set_num_threads(2)


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Keep the decoded-image and synthetic-data caches out of the user's home."""
    os.environ["WEN_CACHE_DIR"] = str(tmp_path_factory.mktemp("wen-cache"))


@pytest.fixture(scope="session")
def wen_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment of ``wen`` subprocesses: private HOME (Ray's auth token), no usage stats."""
    home = tmp_path_factory.mktemp("home")
    env = dict(os.environ)
    env.update(
        HOME=str(home),
        RAY_USAGE_STATS_ENABLED="0",
        PYTHONUNBUFFERED="1",
        OMP_NUM_THREADS="1",
    )
    env.pop("WEN_FAULT_INJECT", None)
    return env


@pytest.fixture
def start_wen(wen_env: dict[str, str]):
    """Start ``wen`` subprocesses; any still running at the end of the test are killed."""
    started: list[WenProcess] = []

    def start(args: list[str], extra_env: dict[str, str] | None = None) -> WenProcess:
        proc = WenProcess(args, {**wen_env, **(extra_env or {})})
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.proc.poll() is None:
            proc.kill_group()


@pytest.fixture
def browser() -> Iterator[Any]:
    """Headless Chromium (Debian's, as `make system-deps` installs it) driven by Playwright."""
    from playwright.sync_api import sync_playwright

    from reports.browser import chromium_path

    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox"])
        yield launched
        launched.close()
