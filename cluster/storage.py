"""Run storage: a local directory (made absolute, as Ray requires) or a pyarrow filesystem URI.

`./runs` by default; `s3://bucket/prefix`, `gs://…` and anything else pyarrow understands work
the same way for reading runs, sweeps and checkpoints. Local writes are atomic (temp + rename);
object stores replace whole objects on close, which is atomic per object already.
"""

from __future__ import annotations

import json
import os
import posixpath
from dataclasses import dataclass
from pathlib import Path

from arc_data.errors import DiscoError
from arc_data.fsio import atomic_output

DEFAULT_STORAGE = "runs"


@dataclass(frozen=True)
class Storage:
    uri: str  # what Ray gets as storage_path: an absolute local path or a URI

    @property
    def is_local(self) -> bool:
        return "://" not in self.uri

    @classmethod
    def of(cls, uri: str | None) -> Storage:
        uri = uri or os.environ.get("DISCO_STORAGE") or DEFAULT_STORAGE
        if "://" not in uri or uri.startswith("file://"):
            return cls(str(Path(uri.removeprefix("file://")).expanduser().resolve()))
        return cls(uri.rstrip("/"))

    def _fs(self):
        import pyarrow.fs as pafs

        try:
            fs, root = pafs.FileSystem.from_uri(self.uri)
        except Exception as e:  # noqa: BLE001 - pyarrow raises several types for bad URIs/credentials
            raise DiscoError(f"storage {self.uri}: cannot open ({str(e).splitlines()[0]})") from None
        return fs, root

    def join(self, *parts: str) -> str:
        return posixpath.join(self.uri, *parts) if not self.is_local else str(Path(self.uri, *parts))

    def exists(self, *parts: str) -> bool:
        if self.is_local:
            return Path(self.uri, *parts).exists()
        import pyarrow.fs as pafs

        fs, root = self._fs()
        return fs.get_file_info(posixpath.join(root, *parts)).type != pafs.FileType.NotFound

    def listdir(self, *parts: str) -> list[str]:
        """Names of the directories under `parts` (sorted); [] when it does not exist."""
        if self.is_local:
            p = Path(self.uri, *parts)
            return sorted(c.name for c in p.iterdir() if c.is_dir()) if p.is_dir() else []
        import pyarrow.fs as pafs

        fs, root = self._fs()
        sel = pafs.FileSelector(posixpath.join(root, *parts), allow_not_found=True)
        return sorted(posixpath.basename(i.path) for i in fs.get_file_info(sel) if i.type == pafs.FileType.Directory)

    def read_text(self, *parts: str) -> str | None:
        """The file's text, or None when it does not exist."""
        if self.is_local:
            p = Path(self.uri, *parts)
            return p.read_text() if p.is_file() else None
        fs, root = self._fs()
        try:
            with fs.open_input_stream(posixpath.join(root, *parts)) as f:
                return f.read().decode()
        except FileNotFoundError:
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
            with atomic_output(Path(self.uri, *parts)) as tmp:
                tmp.write_text(text)
            return
        fs, root = self._fs()
        path = posixpath.join(root, *parts)
        fs.create_dir(posixpath.dirname(path), recursive=True)
        with fs.open_output_stream(path) as f:
            f.write(text.encode())

    def write_json(self, obj, *parts: str) -> None:
        self.write_text(json.dumps(obj, indent=2) + "\n", *parts)

    def download(self, src: str, dest: str | Path) -> Path:
        """Copy the directory `src` (relative to the storage) to a local directory."""
        dest = Path(dest)
        if self.is_local:
            import shutil

            shutil.copytree(Path(self.uri, src), dest, dirs_exist_ok=True)
            return dest
        import pyarrow.fs as pafs

        fs, root = self._fs()
        dest.mkdir(parents=True, exist_ok=True)
        pafs.copy_files(posixpath.join(root, src), str(dest.resolve()), source_filesystem=fs,
                        destination_filesystem=pafs.LocalFileSystem())
        return dest
