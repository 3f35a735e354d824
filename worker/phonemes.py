"""Piper text -> phoneme ids (espeak-ng through piper-tts, framed `^ _ p1 _ ... _ $`) and the voice's
`.onnx.json` config. Torch-free, so the onnxruntime path and the converter share it without importing
torch or transformers.
"""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path
from typing import Any

from schemas.errors import PermanentError
from schemas.voices import VOICE_EXTRA_HINT
from worker.loaded_voice import Encoded

_PHONEME_BLOCK = re.compile(r"(\[\[.*?\]\])")  # piper-tts's own pattern for raw phonemes
PIPER_CONFIG_FILE = "piper_voice.json"  # the voice's own .onnx.json, kept next to the converted model


def read_piper_config(config_path: Path) -> dict[str, Any]:
    """The voice's `.onnx.json`; raises PermanentError when unreadable or missing the needed keys."""
    try:
        pcfg = json.loads(Path(config_path).read_text(encoding="utf-8"))
        _ = int(pcfg["audio"]["sample_rate"]), dict(pcfg["phoneme_id_map"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise PermanentError(f"{config_path} is not a Piper voice config (.onnx.json): {err}") from err
    if not isinstance(pcfg, dict):
        raise PermanentError(f"{config_path} is not a Piper voice config (.onnx.json)")
    return pcfg


# --------------------------------------------------------------------------- text -> ids

_ESPEAK_LOCK = threading.Lock()  # espeak-ng keeps one global voice; calls must not interleave
_ESPEAK: Any = None


def _espeak_sentences(text: str, espeak_voice: str, vowel_clusters: Any) -> list[list[str]]:
    """Phonemes per sentence from piper-tts's bundled espeak-ng (no system package needed)."""
    global _ESPEAK
    try:
        from piper.phonemize_espeak import EspeakPhonemizer
    except ImportError as err:
        raise PermanentError(f"Piper voices need piper-tts's phonemizer: {VOICE_EXTRA_HINT}") from err
    with _ESPEAK_LOCK:
        if _ESPEAK is None:
            _ESPEAK = EspeakPhonemizer()
        result: list[list[str]] = _ESPEAK.phonemize(espeak_voice, text, vowel_clusters=vowel_clusters)
        return result


class PiperEncoder:
    """Text -> Piper phoneme ids, exactly as Piper frames them: `^ _ p1 _ p2 _ ... pn _ $`.

    The sentences espeak finds in one chunk are joined by a space phoneme inside a single frame (measured
    no worse than one frame per sentence, see docs/voices.md). Phonemes missing from the voice's map are
    skipped, as Piper does, and reported in `Encoded.dropped`.
    """

    def __init__(self, pcfg: dict[str, Any]) -> None:
        self.id_map: dict[str, list[int]] = {k: list(v) for k, v in pcfg["phoneme_id_map"].items()}
        self.phoneme_type = str(pcfg.get("phoneme_type", "espeak"))
        self.espeak_voice = str(pcfg.get("espeak", {}).get("voice", "en-us"))
        self.phoneme_map: dict[str, list[str]] = {k: list(v) for k, v in (pcfg.get("phoneme_map") or {}).items()}
        clusters = pcfg.get("vowel_clusters") or {}
        self.vowel_clusters = {tuple(c) for c in clusters.values()} if isinstance(clusters, dict) else None
        if self.phoneme_type not in ("espeak", "text"):
            raise PermanentError(f"Piper phoneme type {self.phoneme_type!r} is not supported (espeak, text)")
        for symbol in ("^", "_", "$"):
            if symbol not in self.id_map:
                raise PermanentError(f"Piper phoneme map lacks the framing symbol {symbol!r}")

    def sentences(self, text: str) -> list[list[str]]:
        """Phonemes per sentence (Unicode code points, NFD, punctuation kept). `[[ phonemes ]]` in the
        text are passed through as they are, one code point each, exactly as piper-tts 1.x does."""
        import unicodedata

        if self.phoneme_type == "text":
            return [list(unicodedata.normalize("NFD", text))]
        return [s for s in self._with_raw_phonemes(text) if s]

    def _with_raw_phonemes(self, text: str) -> list[list[str]]:
        """piper-tts's `PiperVoice.phonemize` for espeak voices, kept step for step (piper 1.x, voice.py):
        a raw block joins the sentence before it, with a space phoneme where the text had a space, and the
        first sentence after it continues that sentence."""
        phonemes: list[list[str]] = []
        parts = _PHONEME_BLOCK.split(text)
        prev_raw = False
        for i, part in enumerate(parts):
            if part.startswith("[["):
                prev_raw = True
                if not phonemes:
                    phonemes.append([])
                if i > 0 and parts[i - 1].endswith(" "):
                    phonemes[-1].append(" ")
                phonemes[-1].extend(part[2:-2].strip())
                if i < len(parts) - 1 and parts[i + 1].startswith(" "):
                    phonemes[-1].append(" ")
                continue
            found = _espeak_sentences(part, self.espeak_voice, self.vowel_clusters or None) if part else []
            if prev_raw and found:
                phonemes[-1].extend(found[0])
                found = found[1:]
            phonemes.extend(found)
            prev_raw = False
        if phonemes and not phonemes[-1]:
            phonemes.pop()
        return phonemes

    def __call__(self, text: str) -> Encoded:
        """Ids for one chunk of text; raises nothing for odd input (unknown phonemes are dropped, reported)."""
        phonemes: list[str] = []
        for sentence in self.sentences(text):
            if phonemes and phonemes[-1] != " ":
                phonemes.append(" ")
            phonemes.extend(sentence)
        while phonemes and phonemes[-1] == " ":
            phonemes.pop()
        return self.frame(phonemes)

    def frame(self, phonemes: list[str]) -> Encoded:
        """`^ _ p1 _ ... pn _ $` for one phoneme list, dropping (and reporting) unmapped phonemes."""
        ids = [*self.id_map["^"], *self.id_map["_"]]
        dropped: list[str] = []
        for phoneme in phonemes:
            for mapped in self.phoneme_map.get(phoneme, [phoneme]):
                if mapped not in self.id_map:
                    if mapped not in dropped:
                        dropped.append(mapped)
                    continue
                ids.extend(self.id_map[mapped])
                ids.extend(self.id_map["_"])
        ids.extend(self.id_map["$"])
        return Encoded(ids=ids, dropped="".join(dropped))


def is_piper_folder(folder: Path) -> bool:
    """True for a folder written by `convert_piper` (or `ttsfleet voices import-piper`)."""
    return (Path(folder) / PIPER_CONFIG_FILE).is_file() and (Path(folder) / "config.json").is_file()
