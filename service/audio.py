"""Serving a job's files, and converting its audio to the formats OpenAI clients ask for.

The store writes wav, flac and ogg (Vorbis); mp3, opus and raw pcm are made here from the stored file
with libsndfile (through soundfile) and scipy's polyphase resampler, never with torch.
"""

from __future__ import annotations

import io
from math import gcd
from pathlib import Path

import numpy as np
import soundfile as sf
from sqlalchemy import select

from schemas.db import Store
from schemas.errors import InvalidInput, JobNotFound
from schemas.status import JobStatus
from schemas.tables import Job

MEDIA_TYPES = {"wav": "audio/wav", "flac": "audio/flac", "ogg": "audio/ogg", "mp3": "audio/mpeg",
               "opus": "audio/ogg", "pcm": "audio/pcm", "aac": "audio/aac"}
PCM_RATE_HZ = 24_000  # OpenAI's raw pcm: 24 kHz, 16-bit signed little-endian, mono
OPUS_RATE_HZ = 48_000  # Opus encodes 8, 12, 16, 24 or 48 kHz only
SIDE_FILES = {"srt": ".srt", "vtt": ".vtt", "manifest": ".manifest.json"}


class AudioNotReady(InvalidInput):
    """Raised when a job's audio is asked for before the job succeeded (HTTP 409)."""


def job_audio_path(store: Store, job_id: str) -> Path:
    """The finished audio file of `job_id`.

    Raises:
        JobNotFound: no such job, or its file is gone from the output folder.
        AudioNotReady: the job has not succeeded (yet).
    """
    with store.read() as session:
        row = session.execute(select(Job.status, Job.audio_path).where(Job.id == job_id)).first()
    if row is None:
        raise JobNotFound(f"no such job: {job_id}")
    if row.status != JobStatus.SUCCEEDED or row.audio_path is None:
        raise AudioNotReady(f"job {job_id} is {JobStatus(row.status).value}; its audio exists once it succeeded")
    path = Path(row.audio_path)
    if not path.is_file():
        raise JobNotFound(f"the audio of job {job_id} is no longer in the output folder")
    return path


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
