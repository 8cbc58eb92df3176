"""Where a run's storage is: a URI or a local path made absolute, and :class:`StorageError`.

A leaf module (no filesystem library, no project module but the config's Ray-job probe and
the error root), so ``search/config.py`` can resolve ``search.storage`` when a config loads;
``search/storage.py`` opens the folder and re-exports these names.
"""

from __future__ import annotations

import os

from trainers.config import ray_job_working_dir
from trainers.errors import WenError

__all__ = ["StorageError", "is_uri", "resolve_storage"]


class StorageError(WenError, RuntimeError):
    """The run's storage cannot be used (unknown scheme, not reachable, not shared)."""


def is_uri(location: str) -> bool:
    """True for ``scheme://...`` locations other than ``file://``."""
    return "://" in location and not location.startswith("file://")


def resolve_storage(location: str, key: str = "--storage") -> str:
    """A URI unchanged; a local path (``file://`` dropped, ``~`` expanded) made absolute.

    Inside a ``ray job submit`` job a relative path is refused: it would resolve inside Ray's
    temporary copy of the job's working folder, which only the head node has and which Ray
    deletes, so the run (checkpoints, predictions, results) would be lost.

    >>> resolve_storage("s3://bucket/runs")
    's3://bucket/runs'
    >>> resolve_storage("/shared/runs")
    '/shared/runs'
    """
    if is_uri(location):
        return location
    local = os.path.expanduser(location.removeprefix("file://"))
    if not os.path.isabs(local):
        job_dir = ray_job_working_dir()
        if job_dir:
            raise StorageError(
                f"{key}: the relative storage path {location!r} would resolve inside the Ray "
                f"job's temporary copy of its working folder ({job_dir}), which only the head "
                "node has and Ray deletes after the job, so the run would be lost: pass an "
                "absolute folder every node sees (e.g. --storage /shared/runs) or an s3:// / "
                "gs:// URI"
            )
    return os.path.abspath(local)
