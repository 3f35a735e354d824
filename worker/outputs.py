"""A job's files in the output store: chunk audio as it is made, the staged assembly, the published result.

Local folder (the default): chunks in `OUT/.chunks/<job>/`, the attempt's assembly in `.../a<N>/`, published
by atomic renames, exactly as before stores existed. Remote store (`s3://...`): each chunk is written to a
local staging folder and put to `OUT/.chunks/<job>/` at once (another worker resumes from it), the
assembly is made locally from fetched chunks, and publishing puts each file to its final key in one PUT.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from schemas.storage import OutputStore, open_output_store, result_files
from worker import audio


class JobFiles:
    """Where one job's chunk audio, staged assembly and result go; see the module docstring."""

    def __init__(self, output_location: str, job_id: str) -> None:
        self.store: OutputStore = open_output_store(output_location)
        self.job_id = job_id
        chunk_root = self.store.join(".chunks", job_id)
        if self.store.local:
            self.stage = Path(chunk_root)
        else:
            # Per process: two workers on one host holding the same job in turn never share scratch files.
            self.stage = Path(tempfile.gettempdir()) / "ttsfleet-stage" / f"{job_id}-{os.getpid()}"
        self._chunk_root = chunk_root

    def save_chunk(self, name: str, samples: np.ndarray, sample_rate_hz: int) -> str:
        """Store one chunk's audio under `name`; returns the location recorded in SQL.

        Raises:
            ValueError: bad samples (see `audio.write_chunk`).
            RetryableError: the remote store refused the upload.
        """
        local = self.stage / name
        audio.write_chunk(local, samples, sample_rate_hz)
        if self.store.local:
            return str(local)
        location = f"{self._chunk_root}/{name}"
        try:
            self.store.put_file(local, location)
        finally:
            local.unlink(missing_ok=True)
        return location

    def local_copy(self, location: str) -> Path:
        """A local file with the bytes at `location` (fetched into the staging folder when remote)."""
        return self.store.fetch(location, self.stage / "fetched")

    def staged(self, attempt_tag: str, name: str) -> Path:
        """Where the attempt tagged `attempt_tag` (`a3`, `r1-a2`) assembles the job's file before publishing."""
        return self.stage / attempt_tag / name

    def publish(self, staged: audio.AssembledAudio, location: str) -> None:
        """Move (local) or put (remote) the staged audio and its side files onto `location`."""
        if self.store.local:
            audio.publish(staged, Path(location))
            return
        sources = (staged.path, staged.manifest_path, staged.srt_path, staged.vtt_path)
        for src, dest in zip(sources, result_files(location), strict=True):
            self.store.put_file(src, dest)

    def discard(self, staged: audio.AssembledAudio) -> None:
        audio.discard(staged)

    def keep_only(self, names: set[str]) -> None:
        """After success: keep the chunk audio named `names` (what the job's rows point to; `ttsfleet
        rerender` reuses it) and remove everything else: staged folders, earlier attempts' files."""
        if not self.store.local:
            shutil.rmtree(self.stage, ignore_errors=True)
            for location in self.store.list(self._chunk_root):
                if location.rsplit("/", 1)[-1] not in names:
                    self.store.remove(location)
            return
        if not self.stage.is_dir():
            return
        for entry in self.stage.iterdir():
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            elif entry.name not in names:
                entry.unlink(missing_ok=True)

    def remove_unreferenced(self, attempt_tag: str, referenced: set[str]) -> None:
        """Remove chunk files of the attempt tagged `attempt_tag` (`*-a3.wav`) whose names are not in
        `referenced` (what the job's chunk rows point to)."""
        for location in self.store.list(self._chunk_root):
            name = location.rsplit("/", 1)[-1]
            if name.endswith(f"-{attempt_tag}.wav") and name not in referenced:
                self.store.remove(location)

    def cleanup(self) -> None:
        """Remove the job's chunk audio and staging (the result, once published, stays)."""
        if not self.store.local:
            self.store.remove(self._chunk_root, recursive=True)
        shutil.rmtree(self.stage, ignore_errors=True)
