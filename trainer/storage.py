"""Run storage: where runs, sweeps and checkpoints live, behind one pyarrow filesystem.

`Storage.of(uri)` builds it once: a local directory (made absolute, because Ray workers change
directory) or any URI pyarrow understands (`s3://bucket/prefix`, `gs://…`). Tests build one over
a `SubTreeFileSystem` to exercise the remote code paths. Every local/remote difference lives in
this file: local writes are atomic (temp + rename), object stores replace whole objects on close,
which is atomic per object already; reading a directory of a remote store copies it to a
temporary local directory first.
"""

from __future__ import annotations

import json
import os
import posixpath
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pyarrow.fs as pafs

from arc_data.errors import DiscoError
from arc_data.fsio import atomic_output, atomic_write_text

DEFAULT_STORAGE = "runs"


@dataclass(frozen=True)
class Storage:
    fs: pafs.FileSystem
    root: str  # path of the storage inside `fs` (an absolute path on the local filesystem)
    uri: str  # how the storage is shown and recorded

    @classmethod
    def of(cls, uri: str | None) -> Storage:
        """From a path or URI; None = $DISCO_STORAGE or ./runs."""
        uri = uri or os.environ.get("DISCO_STORAGE") or DEFAULT_STORAGE
        if "://" not in uri or uri.startswith("file://"):
            path = str(Path(uri.removeprefix("file://")).expanduser().resolve())
            return cls(pafs.LocalFileSystem(), path, path)
        try:
            fs, root = pafs.FileSystem.from_uri(uri)
        except Exception as e:  # noqa: BLE001 - pyarrow raises several types for bad URIs/credentials
            raise DiscoError(f"storage {uri}: cannot open ({str(e).splitlines()[0]})") from None
        return cls(fs, root.rstrip("/"), uri.rstrip("/"))

    @property
    def is_local(self) -> bool:
        """Files are plain files on this machine (appendable, readable in place)."""
        return isinstance(self.fs, pafs.LocalFileSystem)

    @property
    def poll_interval_s(self) -> float:
        """How often following a file is worth a read: cheap locally, a request per read remotely."""
        return 0.5 if self.is_local else 10.0

    def child(self, *parts: str) -> Storage:
        return Storage(self.fs, self.path(*parts), self.join(*parts))

    def join(self, *parts: str) -> str:
        """The location of `parts` as users see it (a local path or a URI)."""
        return str(Path(self.uri, *parts)) if self.is_local else posixpath.join(self.uri, *parts)

    def path(self, *parts: str) -> str:
        """The path of `parts` inside the filesystem."""
        return posixpath.join(self.root, *parts)

    def ray_run_config(self) -> dict:
        """Ray's `RunConfig(storage_path=…, storage_filesystem=…)` for this storage."""
        return {"storage_path": self.root} | ({} if self.is_local else {"storage_filesystem": self.fs})

    def exists(self, *parts: str) -> bool:
        return self.fs.get_file_info(self.path(*parts)).type != pafs.FileType.NotFound

    def listdir(self, *parts: str) -> list[str]:
        """Names of the directories under `parts` (sorted); [] when it does not exist."""
        sel = pafs.FileSelector(self.path(*parts), allow_not_found=True)
        try:
            infos = self.fs.get_file_info(sel)
        except NotADirectoryError:
            return []
        return sorted(posixpath.basename(i.path) for i in infos if i.type == pafs.FileType.Directory)

    def read_text(self, *parts: str) -> str | None:
        """The file's text, or None when it does not exist."""
        try:
            with self.fs.open_input_stream(self.path(*parts)) as f:
                return f.read().decode()
        except (FileNotFoundError, IsADirectoryError):
            return None

    def read_json(self, *parts: str) -> dict | None:
        text = self.read_text(*parts)
        if text is None:
            return None
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            raise DiscoError(f"{self.join(*parts)}: corrupt JSON") from None

    def write_text(self, text: str, *parts: str) -> None:
        if self.is_local:
            atomic_write_text(self.path(*parts), text)
            return
        path = self.path(*parts)
        self.fs.create_dir(posixpath.dirname(path), recursive=True)
        with self.fs.open_output_stream(path) as f:
            f.write(text.encode())

    def write_json(self, obj, *parts: str) -> None:
        self.write_text(json.dumps(obj, indent=2) + "\n", *parts)

    def working_copy(self, *parts: str) -> Path:
        """A local file to write what ends up at `parts`: the file itself on local storage, else a
        temporary copy of it (or a new temporary file) that `upload` puts in place."""
        if self.is_local:
            return Path(self.path(*parts))
        local = Path(tempfile.mkdtemp(prefix="disco-work-"), posixpath.basename(self.path(*parts)))
        local.write_text(self.read_text(*parts) or "")
        return local

    def move(self, src: tuple[str, ...], dst: tuple[str, ...]) -> None:
        """Rename a file or directory within the storage."""
        self.fs.move(self.path(*src), self.path(*dst))

    def delete(self, *parts: str) -> None:
        """Remove a file, or a directory and everything in it (nothing when it does not exist)."""
        kind = self.fs.get_file_info(self.path(*parts)).type
        if kind == pafs.FileType.Directory:
            self.fs.delete_dir(self.path(*parts))
        elif kind == pafs.FileType.File:
            self.fs.delete_file(self.path(*parts))

    def upload(self, local: str | Path, *parts: str) -> None:
        """Copy a local file or directory to `parts` (a directory lands complete, then renamed, when
        local); nothing to do when `local` already is that file."""
        local = Path(local)
        if self.is_local:
            dest = Path(self.path(*parts))
            if local.resolve() == dest.resolve():
                return
            dest.parent.mkdir(parents=True, exist_ok=True)
            if local.is_dir():
                staging = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
                shutil.rmtree(staging, ignore_errors=True)
                shutil.copytree(local, staging)
                shutil.rmtree(dest, ignore_errors=True)
                staging.rename(dest)
            else:
                with atomic_output(dest) as tmp:
                    shutil.copy2(local, tmp)
            return
        self.fs.create_dir(self.path(*parts) if local.is_dir() else posixpath.dirname(self.path(*parts)), recursive=True)
        pafs.copy_files(str(local.resolve()), self.path(*parts), source_filesystem=pafs.LocalFileSystem(),
                        destination_filesystem=self.fs)

    @contextmanager
    def local_dir(self, *parts: str) -> Iterator[Path]:
        """The directory `parts` as a local path: in place on local storage, else a temporary copy."""
        if self.is_local:
            yield Path(self.path(*parts))
            return
        with tempfile.TemporaryDirectory(prefix="disco-fetch-") as tmp:
            dest = Path(tmp, posixpath.basename(self.path(*parts)) or "root")
            dest.mkdir()
            pafs.copy_files(self.path(*parts), str(dest), source_filesystem=self.fs,
                            destination_filesystem=pafs.LocalFileSystem())
            yield dest


def dataset_dir(data, storage: Storage, progress: bool = False) -> str:
    """The run's dataset on this node: `data.path`, or the recipe's build in the data cache (built
    here first if this node has none; see arc_data/cache.py). `data` is a trainer.config.DataConfig."""
    if data.path is not None:
        return data.path
    from arc_data.cache import cached_dataset, default_cache

    cache = data.cache or default_cache(storage.root if storage.is_local else None)
    return str(cached_dataset(data.recipe, cache, progress))
