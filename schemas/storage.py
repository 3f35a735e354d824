"""Where audio lives: a local folder (the default) or a shared store named by an fsspec URL.

`TTSFLEET_OUTPUT_DIR` is a path (`ttsfleet-output`, `/srv/audio`), a `file://` URL (the same thing), or an
object-store URL every worker can reach (`s3://bucket/prefix`, `gs://bucket/prefix`, `memory://x` in
tests). Workers and the producer side (status, the HTTP service, `gc`) both go through `OutputStore`:

- a local folder keeps today's layout and write-to-temporary-then-rename;
- an object store gets each file in one PUT to its final key (an S3/GCS object appears whole or not
  at all, multipart uploads included), other remote filesystems a temporary key then a move;
- `signed_url` gives a presigned HTTP URL where the store supports it (S3, GCS), else None.

S3 endpoints and credentials come from the usual places (`AWS_ACCESS_KEY_ID`, `AWS_ENDPOINT_URL`, ...) or
fsspec's own `FSSPEC_S3_ENDPOINT_URL`-style variables; nothing is read at import time. fsspec is imported
lazily, so the local default needs no extra package.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from schemas.errors import InvalidInput, RetryableError

__all__ = ["OBJECT_STORES", "SIDE_SUFFIXES", "OutputStore", "is_url", "local_path_of", "open_output_store",
           "result_files"]

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
# Stores whose single PUT is atomic: a reader sees the old object or the whole new one, never a part.
OBJECT_STORES = frozenset({"s3", "s3a", "gs", "gcs", "memory", "az", "abfs", "abfss"})

SIDE_SUFFIXES = (".manifest.json", ".srt", ".vtt")  # written beside every job's audio


def result_files(audio_location: str) -> list[str]:
    """A published result: its audio and the side files beside it (manifest, subtitles)."""
    stem = audio_location.rsplit(".", 1)[0]
    return [audio_location, *(stem + suffix for suffix in SIDE_SUFFIXES)]


def is_url(location: str) -> bool:
    """True for a remote fsspec URL (`s3://...`); False for a plain path or a `file://` URL."""
    match = _SCHEME.match(location)
    return match is not None and match.group(1).lower() not in ("file", "local")


def local_path_of(location: str) -> Path:
    """`file:///srv/audio` or `/srv/audio` as a Path (`~` expanded)."""
    return Path(_SCHEME.sub("", location) if location.startswith(("file://", "local://")) else location).expanduser()


def open_output_store(location: str | Path) -> OutputStore:
    """The store at `location` (a path or an fsspec URL).

    Raises:
        InvalidInput: a URL whose protocol fsspec does not know, or whose package is not installed
            (`pip install 'ttsfleet[s3]'` for s3://).
    """
    text = str(location)
    if not is_url(text):
        return OutputStore(str(local_path_of(text).resolve()))
    try:
        import fsspec

        fs, _path = fsspec.core.url_to_fs(text)
    except (ImportError, ValueError) as err:
        raise InvalidInput(f"output store {text!r} cannot be opened: {err} (for s3:// install ttsfleet[s3])") from err
    return OutputStore(text.rstrip("/"), fs)


@dataclass(frozen=True)
class OutputStore:
    """A root folder or URL prefix; every location handed out or accepted is absolute (a path or a URL)."""

    root: str
    fs: Any = field(default=None, repr=False, compare=False)  # fsspec filesystem; None for a local folder

    @property
    def local(self) -> bool:
        return self.fs is None

    @property
    def protocol(self) -> str:
        return "file" if self.local else self.root.split("://", 1)[0].lower()

    def join(self, *parts: str) -> str:
        """The location of `parts` (relative, `/`-separated) under the root."""
        rel = "/".join(p.strip("/") for p in parts if p)
        return str(Path(self.root, rel)) if self.local else f"{self.root}/{rel}"

    def put_file(self, src: Path, dest: str) -> None:
        """Copy local file `src` to `dest` so that readers see the old file or the whole new one.

        Raises:
            RetryableError: the store refused or could not be reached (the job is put back and retried).
        """
        try:
            if self.local:
                target = Path(dest)
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp = target.with_name(f".{target.name}.{os.getpid()}.partial")
                try:
                    shutil.copyfile(src, tmp)
                    os.replace(tmp, target)
                finally:
                    tmp.unlink(missing_ok=True)
            elif self.protocol in OBJECT_STORES:
                self.fs.put_file(str(src), _path(dest))
            else:  # a remote filesystem with real renames (sftp, webdav, ...): temporary name, then move
                tmp_key = f"{dest}.{uuid.uuid4().hex}.partial"
                self.fs.put_file(str(src), _path(tmp_key))
                self.fs.mv(_path(tmp_key), _path(dest))
        except OSError as err:
            raise RetryableError(f"could not store {dest}: {err}") from err

    def fetch(self, location: str, into: Path) -> Path:
        """A local file with `location`'s bytes: the file itself when local, else a copy inside `into`.

        Raises:
            RetryableError: the object is missing or the store cannot be reached.
        """
        if not is_url(location):
            return local_path_of(location)
        into.mkdir(parents=True, exist_ok=True)
        target = into / location.rstrip("/").rsplit("/", 1)[-1]
        try:
            self.fs.get_file(_path(location), str(target))
        except (OSError, KeyError) as err:
            raise RetryableError(f"could not read {location}: {err}") from err
        return target

    def read_bytes(self, location: str) -> bytes:
        """The whole object or file. Raises FileNotFoundError if it is not there."""
        if not is_url(location):
            return local_path_of(location).read_bytes()
        data: bytes = self.fs.cat_file(_path(location))
        return data

    def exists(self, location: str) -> bool:
        """Raises RetryableError when a remote store cannot be reached."""
        if not is_url(location):
            return local_path_of(location).exists()
        with _unreachable_is_retryable(location):
            return bool(self.fs.exists(_path(location)))

    def list(self, location: str) -> list[str]:
        """Locations of the files directly under folder/prefix `location`; empty when there is none.

        Raises:
            RetryableError: a remote store cannot be reached.
        """
        if not is_url(location):
            folder = local_path_of(location)
            return [str(path) for path in folder.iterdir() if path.is_file()] if folder.is_dir() else []
        scheme = location.split("://", 1)[0]
        try:
            with _unreachable_is_retryable(location):
                return [f"{scheme}://{entry}" for entry in self.fs.ls(_path(location), detail=False)]
        except FileNotFoundError:
            return []

    def remove(self, location: str, *, recursive: bool = False) -> None:
        """Delete a file (or a folder/prefix with `recursive`); a missing one is not an error.

        Raises:
            RetryableError: a remote store cannot be reached (nothing is known to be deleted).
        """
        if not is_url(location):
            path = local_path_of(location)
            if recursive and path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            return
        try:
            with _unreachable_is_retryable(location):
                self.fs.rm(_path(location), recursive=recursive)
        except FileNotFoundError:
            pass

    def signed_url(self, location: str | None, expires_s: int) -> str | None:
        """A presigned HTTP(S) URL to `location`, valid `expires_s` seconds; None where the store has none
        (a local folder, an in-memory store) or for no location."""
        if location is None or not is_url(location) or self.fs is None:
            return None
        try:
            url: str = self.fs.sign(_path(location), expiration=expires_s)
        except NotImplementedError:
            return None
        return url


@contextmanager
def _unreachable_is_retryable(location: str) -> Iterator[None]:
    """Any failure of a remote store but a missing file as RetryableError: s3fs lets botocore's own
    exceptions through (EndpointConnectionError is not an OSError), which callers could not tell from a bug."""
    try:
        yield
    except FileNotFoundError:
        raise
    except Exception as err:
        raise RetryableError(f"the output store did not answer for {location}: {type(err).__name__}") from err


def _path(location: str) -> str:
    """fsspec's path of a URL: the part after `scheme://` (bucket/key for object stores)."""
    return _SCHEME.sub("", location)
