"""A run's storage: a local folder or a URI (``s3://``, ``gs://``) through pyarrow filesystems.

Tune persists checkpoints and experiment state to the same place (``RunConfig.storage_path``).
The files ``wen`` owns (predictions, best weights, TensorBoard logs, results tables, the
config and command line) are written straight to the storage with :class:`RunStorage`, never
left to Tune's sync, and always under a ``.``-prefixed temporary name first: readers
(``trainers.predictions.read_prediction_dir``) skip such names, so a crash mid-write never
leaves a file that looks complete.

>>> import tempfile
>>> run = RunStorage.open(tempfile.mkdtemp(), "demo")
>>> run.write_text("command.txt", "wen search a.yaml\\n")
>>> run.append_text("command.txt", "wen search a.yaml --resume\\n")
>>> run.read_text("command.txt").count("wen search")
2
"""

from __future__ import annotations

import posixpath
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import pyarrow.fs as pafs

from search._locations import StorageError, is_uri, resolve_storage
from trainers._atomic import atomic_write_bytes

__all__ = ["RunStorage", "StorageError", "is_uri", "resolve_storage"]


@dataclass(frozen=True)
class RunStorage:
    """The run folder ``STORAGE/NAME`` on a pyarrow filesystem.

    ``uri`` is what Tune gets as ``storage_path`` + ``name``; ``path`` is the path inside
    ``fs``; ``local`` says whether it is a path of this machine.
    """

    storage: str
    name: str
    fs: pafs.FileSystem
    path: str
    local: bool

    @classmethod
    def open(cls, storage: str, name: str) -> RunStorage:
        """Resolve ``storage`` (a path or URI) and the run ``name`` into a run folder."""
        if not name or "/" in name or name.startswith("."):
            raise StorageError(
                f"run name {name!r} must be a plain folder name (no '/', not starting with "
                "'.'): pass --name NAME"
            )
        local = not is_uri(storage)
        if local:
            storage = resolve_storage(storage)
            fs: pafs.FileSystem = pafs.LocalFileSystem()
            base = storage
        else:
            try:
                fs, base = pafs.FileSystem.from_uri(storage)
            except (ValueError, OSError) as exc:  # pyarrow's ArrowInvalid is a ValueError
                raise StorageError(
                    f"storage {storage!r} is not a usable URI ({exc}): use a local path, "
                    "s3://bucket/prefix or gs://bucket/prefix"
                ) from None
        return cls(storage=storage, name=name, fs=fs, path=posixpath.join(base, name), local=local)

    # ----------------------------------------------------------------------------- paths

    @property
    def uri(self) -> str:
        """The run folder as Tune and users see it (a local path or a URI)."""
        return posixpath.join(self.storage, self.name) if not self.local else self.path

    def join(self, *parts: str) -> str:
        """A path inside the run folder (on ``fs``)."""
        return posixpath.join(self.path, *parts)

    def local_path(self, *parts: str) -> Path:
        """A path inside a local run folder; an error for remote storage."""
        if not self.local:
            raise StorageError(f"{self.uri} is not a local folder")
        return Path(self.join(*parts))

    # ---------------------------------------------------------------------- operations

    def exists(self, rel: str) -> bool:
        """Whether ``rel`` (relative to the run folder) exists."""
        return self.fs.get_file_info(self.join(rel)).type != pafs.FileType.NotFound

    def makedirs(self, rel: str = "") -> None:
        """Create a folder inside the run (no-op on object stores, harmless)."""
        self.fs.create_dir(self.join(rel) if rel else self.path, recursive=True)

    def read_text(self, rel: str) -> str:
        """The text of a file in the run folder."""
        with self.fs.open_input_stream(self.join(rel)) as f:
            return f.read().decode()

    def write_text(self, rel: str, text: str) -> None:
        """Write a text file atomically (a ``.``-prefixed temp name, then a move)."""
        self._atomic_write(rel, text.encode())

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Write a binary file atomically."""
        self._atomic_write(rel, data)

    def append_text(self, rel: str, text: str) -> None:
        """Append to a text file (read + atomic rewrite: object stores cannot append)."""
        old = self.read_text(rel) if self.exists(rel) else ""
        self._atomic_write(rel, (old + text).encode())

    def upload_file(self, src: Path, rel: str) -> None:
        """Copy a local file into the run folder atomically."""
        self._atomic_write(rel, Path(src).read_bytes())

    def upload_dir(self, src: Path, rel: str) -> None:
        """Copy a local folder's files into ``rel`` (each file atomically)."""
        for path in sorted(Path(src).rglob("*")):
            if path.is_file():
                self.upload_file(path, posixpath.join(rel, path.relative_to(src).as_posix()))

    def list(self, rel: str) -> list[str]:
        """File names directly inside ``rel`` (empty when it does not exist)."""
        selector = pafs.FileSelector(self.join(rel), allow_not_found=True, recursive=False)
        return sorted(info.base_name for info in self.fs.get_file_info(selector))

    def delete_file(self, rel: str) -> None:
        """Delete a file when present."""
        if self.exists(rel):
            self.fs.delete_file(self.join(rel))

    def _atomic_write(self, rel: str, data: bytes) -> None:
        if self.local:  # the one local atomic writer (fsyncs the file and the folder too)
            atomic_write_bytes(self.local_path(rel), data, what="run file")
            return
        final = self.join(rel)
        parent, base = posixpath.split(final)
        self.fs.create_dir(parent, recursive=True)
        tmp = posixpath.join(parent, f".{base}.{uuid.uuid4().hex[:8]}.tmp")
        with self.fs.open_output_stream(tmp) as f:
            f.write(data)
        # object stores have no atomic rename; move = copy + delete of the hidden temp name
        self.fs.move(tmp, final)

    def copy_local_tree(self, src: Path, rel: str) -> None:
        """Mirror a local folder into the run (local storage: a plain copy)."""
        if self.local:
            dest = self.local_path(rel)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copytree(src, dest, dirs_exist_ok=True)
        else:
            self.upload_dir(src, rel)
