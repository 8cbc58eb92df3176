"""The ``wen`` command line. Each stage's commands live in their own module."""

from search.cli._app import app, data_app

# Importing a command module registers its commands on ``app``.
from search.cli import data as _data  # noqa: E402,F401
from search.cli import search as _search  # noqa: E402,F401
from search.cli import ensemble as _ensemble  # noqa: E402,F401
from search.cli import export as _export  # noqa: E402,F401
from search.cli import train as _train  # noqa: E402,F401
from search.cli import report as _report  # noqa: E402,F401
from search.cli import demo as _demo  # noqa: E402,F401
from search.cli import weights as _weights  # noqa: E402,F401
from search.cli import dashboard as _dashboard  # noqa: E402,F401

__all__ = ["app", "data_app", "main"]


def main() -> None:
    app()
