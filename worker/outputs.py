"""Where a worker's files go: the output store, this process's staging folder, and each job's files.

Local folder (the default): a long job's chunk audio in `OUT/.chunks/<job>/` (one file per engine batch,
flushed to disk before its rows are committed); results are assembled in this process's own staging
folder `OUT/.staging/<host>-<pid>-<worker>/` (same filesystem) and moved into place by atomic renames,
once the job's finish has won. Remote store (`s3://...`): each batch file is written locally and put to
`OUT/.chunks/<job>/` at once (another worker resumes from it), the assembly is made locally from fetched
chunks, and publishing puts each file to its final key in one PUT.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from schemas.storage import OutputStore, open_output_store, result_files
from worker import audio

STAGING = ".staging"


@dataclass(frozen=True)
class Outputs:
    """The output store and this process's staging folder; one per worker process."""

    store: OutputStore
    staging: Path

    @classmethod
    def open(cls, location: str, worker_id: str) -> Outputs:
        """The store at `location`; a staging folder named after this host, process and worker."""
        store = open_output_store(location)
        name = f"{socket.gethostname()}-{os.getpid()}-{hashlib.sha256(worker_id.encode()).hexdigest()[:8]}"
        root = Path(store.join(STAGING)) if store.local else Path(tempfile.gettempdir()) / "ttsfleet-stage"
        return cls(store, root / name)

    def job(self, job_id: str) -> JobFiles:
        return JobFiles(self, job_id)

    def sweep_dead_stagings(self) -> list[Path]:
        """Remove staging folders of this host's processes that are gone (a worker killed mid-assembly
        leaves its staged files there). Returns what was removed."""
        removed: list[Path] = []
        prefix = f"{socket.gethostname()}-"
        root = self.staging.parent
        for entry in root.iterdir() if root.is_dir() else ():
            pid = entry.name[len(prefix):].split("-", 1)[0]
            if entry.name.startswith(prefix) and pid.isdigit() and not _pid_alive(int(pid)):
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry)
        return removed


class JobFiles:
    """One job's chunk audio, its staged result and its published result; see the module docstring."""

    def __init__(self, outputs: Outputs, job_id: str) -> None:
        self.outputs = outputs
        self.store = outputs.store
        self.job_id = job_id
        self._chunk_root = self.store.join(".chunks", job_id)
        self._fetched: dict[str, Path] = {}

    def save_batch(self, name: str, chunks: list[np.ndarray], sample_rate_hz: int) -> tuple[str, list[int]]:
        """Store the chunks' audio in one file named `name`, on disk (local: flushed, with its folder) before
        this returns; the location to record in SQL and where each chunk starts in it (samples).

        Raises:
            ValueError: bad samples (see `audio.write_chunks`).
            RetryableError: the remote store refused the upload.
        """
        if self.store.local:
            local = Path(self._chunk_root) / name
            created = not local.parent.is_dir()
            offsets = audio.write_chunks(local, chunks, sample_rate_hz)
            _fsync_dir(local.parent)
            if created:  # the job's chunk folder itself is new: its entry in `.chunks` must be on disk too
                _fsync_dir(local.parent.parent)
            return str(local), offsets
        local = self.outputs.staging / "chunks" / f"{self.job_id}-{name}"
        location = f"{self._chunk_root}/{name}"
        try:
            offsets = audio.write_chunks(local, chunks, sample_rate_hz, flush=False)
            self.store.put_file(local, location)
        finally:
            local.unlink(missing_ok=True)
        return location, offsets

    def stored(self, location: str, offset: int | None, frames: int | None) -> audio.StoredAudio:
        """A stored chunk's audio as `assemble` reads it (a remote file is fetched once per job)."""
        if self.store.local:
            return audio.StoredAudio(Path(location), offset, frames)
        if location not in self._fetched:
            into = self.outputs.staging / "fetched" / self.job_id / str(len(self._fetched))
            self._fetched[location] = self.store.fetch(location, into)
        return audio.StoredAudio(self._fetched[location], offset, frames)

    def staged(self, attempt_tag: str, location: str) -> Path:
        """Where the attempt tagged `attempt_tag` assembles the job's result (the audio's extension kept)."""
        suffix = Path(location.rsplit("/", 1)[-1]).suffix
        return self.outputs.staging / f"{self.job_id}-{attempt_tag}{suffix}"

    def publish(self, staged: audio.AssembledAudio, location: str) -> None:
        """Move (local) or put (remote) the staged audio and its side files onto `location`."""
        if self.store.local:
            audio.publish(staged, Path(location))
            return
        sources = (staged.path, staged.manifest_path, staged.srt_path, staged.vtt_path)
        for src, dest in zip(sources, result_files(location), strict=True):
            self.store.put_file(src, dest)
        audio.discard(staged)

    def discard(self, staged: audio.AssembledAudio) -> None:
        audio.discard(staged)
        self.forget_fetched()

    def forget_fetched(self) -> None:
        """Remove the chunk files fetched from a remote store for this job's assembly."""
        if self._fetched:
            shutil.rmtree(self.outputs.staging / "fetched" / self.job_id, ignore_errors=True)
            self._fetched.clear()

    def keep_only(self, names: set[str]) -> None:
        """After success: keep the chunk audio named `names` (what the job's rows point to; `ttsfleet
        rerender` reuses it) and remove everything else (earlier attempts' files, folders of old versions)."""
        self.forget_fetched()
        if not self.store.local:
            for location in self.store.list(self._chunk_root):
                if location.rsplit("/", 1)[-1] not in names:
                    self.store.remove(location)
            return
        root = Path(self._chunk_root)
        if not root.is_dir():
            return
        for entry in root.iterdir():
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            elif entry.name not in names:
                entry.unlink(missing_ok=True)
        if not names:
            root.rmdir()

    def remove_unreferenced(self, attempt_tag: str, referenced: set[str]) -> None:
        """Remove chunk files of the attempt tagged `attempt_tag` (`*-a3.wav`) whose names are not in
        `referenced` (what the job's chunk rows point to)."""
        for location in self.store.list(self._chunk_root):
            name = location.rsplit("/", 1)[-1]
            if name.endswith(f"-{attempt_tag}.wav") and name not in referenced:
                self.store.remove(location)

    def cleanup(self) -> None:
        """Remove the job's chunk audio (the result, once published, stays)."""
        self.forget_fetched()
        if self.store.local:
            shutil.rmtree(self._chunk_root, ignore_errors=True)
        else:
            self.store.remove(self._chunk_root, recursive=True)


def _fsync_dir(folder: Path) -> None:
    """Make a folder's entries (a new or renamed file) durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
