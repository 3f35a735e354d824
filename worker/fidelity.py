"""How close a precision policy's audio is to fp32's, for one voice: the fidelity measure and its bar.

The policy's audio and strict fp32's are made from the same weights on the same device, noise off, for a
fixed set of sentences, and compared three ways (why these, and the measurements behind the bar, are in
docs/precision.md):

- log-mel spectral distance (dB): per frame, the RMS over 80 mel bands of the difference of the two
  log-mel power spectra, averaged over every frame of every sentence; both spectra floored 80 dB below
  fp32's loudest band (librosa's `top_db`), so what lies below hearing in the recording does not count.
  What a listener hears as timbre and noise; insensitive to inaudible phase. 0 = identical.
- SNR (dB): fp32's signal energy over the energy of the sample-by-sample difference, over all sentences.
  Sensitive to any change, phase included; capped at SNR_CEILING_DB (float32 rounding).
- duration agreement: the largest relative difference in a sentence's length (0 = every length equal).
  VITS turns small errors in its duration predictor into whole frames of 256 samples.

Numpy only (mel filters from transformers' numpy audio utilities); the measurement itself runs a `Runner`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from worker.device import DeviceInfo
    from worker.runner import Runner

log = logging.getLogger("worker.engine")

# Read with noise off under the policy and under strict fp32. Short and long, statement and question,
# numbers said as words (the producer normalizes them before a voice sees them).
FIDELITY_SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "Please call me back when you have time, and bring the blue folder with you.",
    "Is the seven fifteen train to Boston on time today?",
    "We read books aloud for people who cannot see the page, one chapter after another, "
    "for as long as the story lasts.",
)
SNR_CEILING_DB = 120.0
MEL_BANDS, FFT_SIZE, HOP = 80, 1024, 256  # HiFi-GAN's analysis at 22,050 Hz (the vocoder VITS uses)
TOP_DB = 80.0  # dynamic range compared, below the reference's loudest band
_MEL_FLOOR = 1e-10  # power floor before the log (-100 dB): digital silence stays finite


@dataclass(frozen=True, slots=True)
class Fidelity:
    """A policy's audio against strict fp32's (see module docstring): `mel_distance_db` (0 = identical),
    `snr_db` (higher is closer), `duration_error` (largest relative length difference), over `sentences`."""

    mel_distance_db: float
    snr_db: float
    duration_error: float
    sentences: int

    def summary(self) -> str:
        """One line: `mel 0.21 dB, SNR 31.4 dB, lengths equal` (or `lengths within 1.2%`)."""
        lengths = "lengths equal" if self.duration_error == 0 else f"lengths within {self.duration_error:.1%}"
        return f"mel {self.mel_distance_db:.2f} dB, SNR {self.snr_db:.1f} dB, {lengths}"


@dataclass(frozen=True, slots=True)
class FidelityBar:
    """The least fidelity a policy may run at: at most `max_mel_distance_db`, at least `min_snr_db`, and
    no sentence's length off by more than `max_duration_error`."""

    max_mel_distance_db: float
    min_snr_db: float
    max_duration_error: float

    def problem(self, fidelity: Fidelity) -> str | None:
        """Why `fidelity` is below the bar (one phrase), or None when it meets it."""
        misses = []
        if fidelity.mel_distance_db > self.max_mel_distance_db:
            misses.append(f"mel {fidelity.mel_distance_db:.2f} dB > {self.max_mel_distance_db:g}")
        if fidelity.snr_db < self.min_snr_db:
            misses.append(f"SNR {fidelity.snr_db:.1f} dB < {self.min_snr_db:g}")
        if fidelity.duration_error > self.max_duration_error:
            misses.append(f"lengths off by {fidelity.duration_error:.1%} > {self.max_duration_error:.1%}")
        return ", ".join(misses) or None

    def describe(self) -> str:
        return (f"mel <= {self.max_mel_distance_db:g} dB, SNR >= {self.min_snr_db:g} dB, "
                f"lengths within {self.max_duration_error:.1%}")


# The bar, from the joe voice measured per module under bf16 and fp16 autocast (docs/precision.md, "The
# fidelity bar"): what the fp32 islands of text encoder and duration predictor give with the flow and the
# decoder in low precision passes only where the word error rate stayed within 0.03 of fp32.
DEFAULT_BAR = FidelityBar(max_mel_distance_db=1.0, min_snr_db=20.0, max_duration_error=0.01)


def log_mel_db(wave: np.ndarray, sample_rate_hz: int) -> np.ndarray:
    """(frames, MEL_BANDS) log-mel power spectrum in dB of float mono audio (Hann window, FFT_SIZE, HOP)."""
    from transformers.audio_utils import mel_filter_bank, spectrogram, window_function

    filters = mel_filter_bank(num_frequency_bins=FFT_SIZE // 2 + 1, num_mel_filters=MEL_BANDS, min_frequency=0.0,
                              max_frequency=sample_rate_hz / 2, sampling_rate=sample_rate_hz, norm="slaney",
                              mel_scale="slaney")
    audio = np.asarray(wave, dtype=np.float64)
    if audio.size < FFT_SIZE:  # too short for one window: pad with silence
        audio = np.pad(audio, (0, FFT_SIZE - audio.size))
    mel = spectrogram(audio, window_function(FFT_SIZE, "hann"), frame_length=FFT_SIZE, hop_length=HOP, power=2.0,
                      mel_filters=filters, mel_floor=_MEL_FLOOR, log_mel="dB", dtype=np.dtype(np.float64))
    return np.asarray(mel, dtype=np.float64).T


def compare(reference: Sequence[np.ndarray], test: Sequence[np.ndarray], sample_rate_hz: int) -> Fidelity:
    """The fidelity of `test` against `reference`, sentence by sentence (same order, same count). Audio
    of different lengths is compared over the shorter length (and counted in `duration_error`)."""
    if len(reference) != len(test) or not reference:
        raise ValueError(f"compare needs the same sentences: {len(reference)} references, {len(test)} tests")
    signal = error = 0.0
    frame_distances: list[np.ndarray] = []
    duration_error = 0.0
    for ref, got in zip(reference, test, strict=True):
        ref64, got64 = np.asarray(ref, dtype=np.float64), np.asarray(got, dtype=np.float64)
        duration_error = max(duration_error, abs(len(got64) - len(ref64)) / max(len(ref64), 1))
        n = min(len(ref64), len(got64))
        signal += float(np.sum(ref64[:n] ** 2))
        error += float(np.sum((ref64[:n] - got64[:n]) ** 2))
        ref_mel, got_mel = log_mel_db(ref64[:n], sample_rate_hz), log_mel_db(got64[:n], sample_rate_hz)
        floor = float(ref_mel.max()) - TOP_DB
        ref_mel, got_mel = np.maximum(ref_mel, floor), np.maximum(got_mel, floor)
        frame_distances.append(np.sqrt(np.mean((ref_mel - got_mel) ** 2, axis=1)))
    snr = SNR_CEILING_DB if error <= signal * 10 ** (-SNR_CEILING_DB / 10) else 10 * np.log10(signal / error)
    return Fidelity(mel_distance_db=round(float(np.mean(np.concatenate(frame_distances))), 4),
                    snr_db=round(float(snr), 2), duration_error=round(duration_error, 5), sentences=len(reference))


def measure(runner: Runner, device: DeviceInfo, sentence_ids: Sequence[Sequence[int]], sample_rate_hz: int,
            reference: Sequence[np.ndarray] | None = None) -> Fidelity:
    """Run each sentence alone under the runner's policy, noise off, and compare it with strict fp32's
    audio (`reference_audio`, made now unless given). Sentences run one at a time: a batch's padding would
    add its own differences."""
    if reference is None:
        reference = reference_audio(runner, device, sentence_ids)
    with runner.noiseless():
        tested = [runner.run([ids])[0] for ids in sentence_ids]
    return compare(reference, tested, sample_rate_hz)


def reference_audio(runner: Runner, device: DeviceInfo, sentence_ids: Sequence[Sequence[int]]) -> list[np.ndarray]:
    """Each sentence alone in strict fp32 (autocast off, TF32 off), noise off."""
    with runner.noiseless(), strict_fp32(device):
        return [runner.run([ids], fp32=True)[0] for ids in sentence_ids]


@contextmanager
def strict_fp32(device: DeviceInfo) -> Iterator[None]:
    """Full fp32 matmuls and convolutions while inside (TF32 off on CUDA), the process's settings after."""
    import torch

    matmul = torch.get_float32_matmul_precision()
    cudnn = torch.backends.cudnn.allow_tf32
    torch.set_float32_matmul_precision("highest")
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(matmul)
        torch.backends.cudnn.allow_tf32 = cudnn
