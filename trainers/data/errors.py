"""The data layer's errors: a dataset that cannot be used as it is, a folder of no known layout."""

from __future__ import annotations

from trainers.errors import WenError

__all__ = ["DataError", "LayoutError"]


class DataError(WenError, ValueError):
    """The dataset cannot be used as it is; the message lists the problems and the fix."""


class LayoutError(DataError):
    """A folder does not have the structure of the requested (or any known) layout, or a
    manifest file is not one this wen wrote."""
