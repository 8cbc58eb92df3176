"""The one atomic-write helper (ARCHITECTURE rule 15): every writer of a run's files uses it.

A file is written into a dot-prefixed temporary file in the same folder, fsynced, renamed over
the target with :func:`os.replace` and the folder is fsynced, so a reader (or a run killed
half-way) sees either the old file or the complete new one, never a torn one. A folder is
built in a ``.NAME.tmp-*`` sibling, its files and itself fsynced, then swapped in; the old folder
is removed only after the new one is in place. An ``OSError`` from the file system (a full
disk above all) is re-raised with the same ``errno`` and one message naming the file, what is
intact and what to do (:func:`write_failure`).

>>> import tempfile, pathlib
>>> p = pathlib.Path(tempfile.mkdtemp()) / "a.json"
>>> _ = atomic_write_json(p, {"x": float("nan")})
>>> p.read_text()
'{\\n  "x": null\\n}\\n'
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

__all__ = [
    "atomic_path",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "fsync_dir",
    "json_safe",
    "remove_leftovers",
    "staged_folder",
    "write_failure",
]

_INTACT_FILE = "no partial file is left and any earlier file there is intact"
_INTACT_FOLDER = "the partial copy was removed and any earlier folder there is intact"


def write_failure(
    what: str,
    path: Path,
    exc: OSError,
    intact: str = _INTACT_FILE,
    then: str = "run the command again",
) -> str:
    """The message of a failed write: what failed, why, what is intact, what to do.

    ``what`` names the kind of file ("predictions", "checkpoint"); ``intact`` says what a
    reader still finds; ``then`` is the step after freeing space.
    """
    cause = "the disk is full" if exc.errno == errno.ENOSPC else (exc.strerror or str(exc))
    return (
        f"writing {what} {path} failed: {cause}; {intact}: free space in {path.parent} "
        f"(or fix the cause) and {then}"
    )


def _reraise(exc: BaseException, what: str, path: Path, intact: str, then: str) -> None:
    """Turn a file-system ``OSError`` into the one message; anything else passes unchanged.

    Project errors that subclass ``OSError`` carry their own message and no ``errno``, so
    only errors the operating system raised (``errno`` set) are rewritten.
    """
    if isinstance(exc, OSError) and exc.errno is not None:
        raise OSError(exc.errno, write_failure(what, path, exc, intact, then)) from exc
    raise exc


def fsync_dir(path: Path) -> None:
    """Make renames inside ``path`` durable; a no-op where the file system refuses it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems refuse fsync on folders; the data is written either way
        pass
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


@contextlib.contextmanager
def atomic_path(
    path: str | Path, what: str = "file", then: str = "run the command again"
) -> Iterator[Path]:
    """A temporary path beside ``path`` for writers that need a name (``np.memmap``, a
    library's ``save(filename)``); on a clean exit it is fsynced and renamed over ``path``.

    The temporary name is ``.NAME.<random>.tmp``, so globs for visible files never see it.
    """
    path = Path(path)
    tmp: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp = Path(name)
        yield tmp
        _fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        _reraise(exc, what, path, _INTACT_FILE, then)
    fsync_dir(path.parent)


def atomic_write(
    path: str | Path,
    write: Callable[[IO[bytes]], None],
    what: str = "file",
    then: str = "run the command again",
) -> Path:
    """Call ``write(fh)`` on an open binary temporary file, then put it at ``path`` atomically."""
    path = Path(path)
    with atomic_path(path, what, then) as tmp, open(tmp, "wb") as fh:
        write(fh)
        fh.flush()
    return path


def atomic_write_bytes(path: str | Path, data: bytes, what: str = "file") -> Path:
    """Write ``data`` to ``path`` atomically."""
    return atomic_write(path, lambda fh: fh.write(data), what)


def atomic_write_text(path: str | Path, text: str, what: str = "file") -> Path:
    """Write ``text`` (UTF-8, newlines as given) to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"), what)


def atomic_write_json(
    path: str | Path, data: Any, what: str = "file", indent: int | None = 2
) -> Path:
    """``data`` as JSON (NaN and inf written as null, numpy values as Python ones), atomically."""
    text = json.dumps(json_safe(data), indent=indent, sort_keys=False)
    return atomic_write_text(path, text + "\n" if indent is not None else text, what)


def json_safe(obj: Any) -> Any:
    """JSON has no NaN/inf: write them as null; numpy scalars and arrays as Python values."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if hasattr(obj, "tolist"):
        return json_safe(obj.tolist())
    if isinstance(obj, float) and (obj != obj or obj in (float("inf"), float("-inf"))):
        return None
    return obj


def _fsync_tree(folder: Path) -> None:
    """fsync every file below ``folder``, then each folder, deepest first."""
    folders = [folder]
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not path.is_symlink():
            _fsync_file(path)
        elif path.is_dir():
            folders.append(path)
    for sub in reversed(folders):
        fsync_dir(sub)


def _swap_in(tmp: Path, target: Path, replace: bool) -> None:
    """Rename ``tmp`` to ``target``; a non-empty old ``target`` is moved aside first (when
    ``replace``) and deleted only once the new folder is in place."""
    old: Path | None = None
    if replace and target.exists() and (not target.is_dir() or any(target.iterdir())):
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
        os.replace(target, old / target.name)
    try:
        os.replace(tmp, target)  # atomic; also replaces an empty folder
    except BaseException:
        if old is not None:  # put the old folder back: the target must never go missing
            os.replace(old / target.name, target)
            shutil.rmtree(old, ignore_errors=True)
        raise
    fsync_dir(target.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def remove_leftovers(folder: str | Path) -> list[Path]:
    """Delete what writers killed mid-write left directly in ``folder``: staged folders
    (``.NAME.tmp-*``), folders moved aside (``.NAME.old-*``) and temporary files
    (``.NAME.*.tmp``). Only for a folder no other process is writing into now. Returns them.

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> (d / ".epoch_0002.tmp-x1").mkdir(); (d / "epoch_0001").mkdir()
    >>> [p.name for p in remove_leftovers(d)], sorted(p.name for p in d.iterdir())
    (['.epoch_0002.tmp-x1'], ['epoch_0001'])
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for path in sorted(folder.iterdir()):
        name = path.name
        staged = name.startswith(".") and (".tmp-" in name or ".old-" in name)
        if staged or (name.startswith(".") and name.endswith(".tmp")):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed.append(path)
    return removed


@contextlib.contextmanager
def staged_folder(
    target: str | Path,
    what: str = "folder",
    replace: bool = True,
    then: str = "run the command again",
    intact: str = _INTACT_FOLDER,
) -> Iterator[Path]:
    """Yield an empty ``.NAME.tmp-*`` sibling of ``target``; on a clean exit its files are
    fsynced and it is swapped in for ``target``.

    ``replace=False`` leaves a non-empty ``target`` alone: the rename then fails with an
    ``OSError`` (two processes racing to build the same folder; the caller decides whether
    the winner's copy will do). On any error the staged copy is removed.
    """
    target = Path(target)
    tmp: Path | None = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        yield tmp
        _fsync_tree(tmp)
        _swap_in(tmp, target, replace)
    except BaseException as exc:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        _reraise(exc, what, target, intact, then)
