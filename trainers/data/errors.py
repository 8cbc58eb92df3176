"""The data layer's error for a dataset that cannot be used as it is."""

from __future__ import annotations

from trainers.errors import WenError

__all__ = ["DataError"]


class DataError(WenError, ValueError):
    """The dataset cannot be used as it is; the message lists the problems and the fix."""
