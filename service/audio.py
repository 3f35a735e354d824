"""Serving a job's files, and converting its audio to the formats OpenAI clients ask for.

The store writes wav, flac and ogg (Vorbis); mp3, opus and raw pcm are made here from the stored file
with libsndfile (through soundfile) and scipy's polyphase resampler, never with torch.
"""

from __future__ import annotations

import contextlib
import glob
import io
import os
import shutil
import tempfile
import time
import uuid
from datetime import datetime
from math import gcd
from pathlib import Path

import numpy as np
import soundfile as sf
from sqlalchemy import select

from schemas.db import Store
from schemas.errors import InvalidInput, JobNotFound, RetryableError
from schemas.status import JobStatus
from schemas.storage import is_url, open_output_store, result_files
from schemas.tables import Job

MEDIA_TYPES = {"wav": "audio/wav", "flac": "audio/flac", "ogg": "audio/ogg", "mp3": "audio/mpeg",
               "opus": "audio/ogg", "pcm": "audio/pcm", "aac": "audio/aac"}
PCM_RATE_HZ = 24_000  # OpenAI's raw pcm: 24 kHz, 16-bit signed little-endian, mono
OPUS_RATE_HZ = 48_000  # Opus encodes 8, 12, 16, 24 or 48 kHz only
SIDE_FILES = {"srt": ".srt", "vtt": ".vtt", "manifest": ".manifest.json"}


CACHE = Path(tempfile.gettempdir()) / "ttsfleet-service"  # shared by every `serve` process on the host
SWEEP_EVERY_S = 60.0
_swept_at = [0.0]


class AudioNotReady(InvalidInput):
    """Raised when a job's audio is asked for before the job succeeded (HTTP 409)."""


class AudioPurged(JobNotFound):
    """Raised when the result TTL (`ttsfleet gc`) deleted a job's audio (HTTP 410)."""


def job_audio_path(store: Store, job_id: str, cache_s: float = 3600.0) -> Path:
    """The finished audio file of `job_id`, local: a result in an object store (`s3://...`) is fetched once,
    with its side files, into a local cache (see `_fetched`) whose copies go after `cache_s` unused.

    Raises:
        JobNotFound: no such job, or its file is gone from the output folder or store.
        AudioPurged: `gc` deleted it (its cached copy goes too).
        AudioNotReady: the job has not succeeded (yet).
    """
    with store.read() as session:
        row = session.execute(select(Job.status, Job.audio_path, Job.finished_at, Job.audio_purged_at)
                              .where(Job.id == job_id)).first()
    if row is None:
        raise JobNotFound(f"no such job: {job_id}")
    _sweep(cache_s)
    if row.audio_purged_at is not None:
        _drop_cached(job_id)
        raise AudioPurged(f"the audio of job {job_id} was deleted by the result TTL on "
                          f"{row.audio_purged_at:%Y-%m-%d %H:%M} UTC; re-render the job to make it again")
    if row.status != JobStatus.SUCCEEDED or row.audio_path is None:
        raise AudioNotReady(f"job {job_id} is {JobStatus(row.status).value}; its audio exists once it succeeded")
    if is_url(row.audio_path):
        return _fetched(row.audio_path, job_id, row.finished_at)
    path = Path(row.audio_path)
    if not path.is_file():
        raise JobNotFound(f"the audio of job {job_id} is no longer in the output folder")
    return path


def fetched_copy(location: str, name: str, finished_at: datetime | None, cache_s: float) -> Path:
    """A remote file that is not a job's own result (a book's `.m4b`) copied into the local cache as a
    result is (`name` keys its folder; `finished_at` tells one build from the next).

    Raises:
        JobNotFound: it is no longer in the output store.
    """
    _sweep(cache_s)
    return _fetched(location, name, finished_at.replace(tzinfo=None) if finished_at else None)


def _fetched(location: str, job_id: str, finished_at: datetime | None) -> Path:
    """A remote result and its side files, copied once into a local cache folder named after the job and
    when it finished: a published result never changes in place, and a re-render finishes anew (its older
    copies are dropped then). The folder appears by one rename, so concurrent requests never read half a
    copy; each use touches it, so the sweep keeps what is in use."""
    stamp = finished_at.strftime("%Y%m%dT%H%M%S%f") if finished_at else "unfinished"
    folder = CACHE / f"{job_id}-{stamp}"
    target = folder / location.rstrip("/").rsplit("/", 1)[-1]
    if target.is_file():
        with contextlib.suppress(OSError):
            os.utime(folder)
        return target
    _drop_cached(job_id)  # an earlier render's copy
    output = open_output_store(location.rsplit("/", 1)[0])
    tmp = folder.with_name(f".{folder.name}.{uuid.uuid4().hex}")
    try:
        for side in result_files(location):
            if side == location or output.exists(side):
                output.fetch(side, tmp)
        tmp.rename(folder)
    except RetryableError as err:
        raise JobNotFound(f"the audio of job {job_id} is no longer in the output store") from err
    except OSError:
        if not target.is_file():  # not another request's copy that got there first
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _drop_cached(job_id: str) -> None:
    """Remove every cached copy of `job_id`'s result (any render)."""
    for folder in CACHE.glob(f"{glob.escape(job_id)}-*"):
        shutil.rmtree(folder, ignore_errors=True)


def _sweep(cache_s: float, now: float | None = None) -> None:
    """Remove cached copies unused for `cache_s` seconds; at most once a minute per process."""
    now = time.time() if now is None else now
    if now - _swept_at[0] < SWEEP_EVERY_S or not CACHE.is_dir():
        return
    _swept_at[0] = now
    for folder in CACHE.iterdir():
        with contextlib.suppress(OSError):
            if now - folder.stat().st_mtime > cache_s:
                shutil.rmtree(folder, ignore_errors=True)


def side_file(audio: Path, kind: str) -> Path:
    """`audio`'s subtitles (`srt`, `vtt`) or manifest, written beside it by the worker."""
    return audio.with_suffix(SIDE_FILES[kind])


def _resample(samples: np.ndarray, from_hz: int, to_hz: int) -> np.ndarray:
    if from_hz == to_hz:
        return samples
    from scipy.signal import resample_poly

    common = gcd(from_hz, to_hz)
    return np.asarray(resample_poly(samples, to_hz // common, from_hz // common, axis=0), dtype=np.float32)


def convert(path: Path, response_format: str) -> bytes:
    """The audio in `path` as `response_format` bytes (wav/flac 16-bit, mp3, opus in Ogg, pcm 24 kHz s16le).

    Raises:
        InvalidInput: a format libsndfile cannot write here (aac).
    """
    samples, rate = sf.read(str(path), dtype="float32", always_2d=False)
    out = io.BytesIO()
    if response_format == "pcm":
        pcm = np.clip(_resample(samples, rate, PCM_RATE_HZ), -1.0, 1.0)
        return (pcm * 32767).astype("<i2").tobytes()
    if response_format == "wav":
        sf.write(out, samples, rate, format="WAV", subtype="PCM_16")
    elif response_format == "flac":
        sf.write(out, samples, rate, format="FLAC", subtype="PCM_16")
    elif response_format == "mp3":
        sf.write(out, samples, rate, format="MP3", subtype="MPEG_LAYER_III")
    elif response_format == "opus":
        sf.write(out, _resample(samples, rate, OPUS_RATE_HZ), OPUS_RATE_HZ, format="OGG", subtype="OPUS")
    else:
        raise InvalidInput(f"response_format {response_format} is not supported; use wav, flac, mp3, opus or pcm")
    return out.getvalue()
