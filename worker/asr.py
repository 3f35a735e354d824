"""An independent, offline speech recognizer for tests and the GPU check: PocketSphinx (its en-US acoustic
and language models ship inside the PyPI wheel, BSD licence; the `test` extra installs it) plus word error
rate. pocketsphinx and scipy are imported only inside `transcribe`.

PocketSphinx is rough (WER ~0.2 on clean synthetic speech), so use it with loose thresholds: it tells
speech from noise or gibberish, not good speech from very good speech.
"""

from __future__ import annotations

import re
from math import gcd

import numpy as np

ASR_RATE_HZ = 16000
# A paragraph the default voice must speak intelligibly, and the loose bound its WER must stay under
# (measured 0.04-0.09 over seeds on the CPU; the recognizer alone errs ~0.2 on some sentences).
REFERENCE_PARAGRAPH = ("The quick brown fox jumps over the lazy dog. This is an offline text to speech test. "
                       "We read books aloud for people who cannot see the page. "
                       "Every morning the train leaves the station at seven o'clock. "
                       "Please call me back when you have time.")
MAX_WER = 0.35


def transcribe(wav: np.ndarray, sample_rate_hz: int) -> str:
    """Lower-case transcript of float audio in [-1, 1] (mono or (samples, channels)); "" if nothing heard."""
    from pocketsphinx import Decoder
    from scipy.signal import resample_poly

    audio = np.asarray(wav, dtype=np.float64)
    if audio.ndim > 1:
        audio = audio.mean(axis=1)
    if sample_rate_hz != ASR_RATE_HZ:
        g = gcd(sample_rate_hz, ASR_RATE_HZ)
        audio = resample_poly(audio, ASR_RATE_HZ // g, sample_rate_hz // g)
    decoder = Decoder(samprate=ASR_RATE_HZ, loglevel="FATAL")
    decoder.start_utt()
    decoder.process_raw((np.clip(audio, -1, 1) * 32767).astype(np.int16).tobytes(), full_utt=True)
    decoder.end_utt()
    hyp = decoder.hyp()
    return hyp.hypstr.lower() if hyp else ""


def words(text: str) -> list[str]:
    """Lower-case words with punctuation removed (apostrophes kept: "don't")."""
    return re.findall(r"[a-z0-9']+", text.lower())


def wer(ref: str, hyp: str) -> float:
    """Word error rate: word-level edit distance / number of reference words."""
    r, h = words(ref), words(hyp)
    d = np.zeros((len(r) + 1, len(h) + 1), dtype=int)
    d[:, 0], d[0, :] = range(len(r) + 1), range(len(h) + 1)
    for i in range(1, len(r) + 1):
        for j in range(1, len(h) + 1):
            d[i, j] = min(d[i - 1, j] + 1, d[i, j - 1] + 1, d[i - 1, j - 1] + (r[i - 1] != h[j - 1]))
    return float(d[-1, -1]) / max(1, len(r))
