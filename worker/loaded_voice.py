"""A voice in memory: a transformers VITS model plus the function that turns text into its ids.

Kept apart from `worker/voices.py` (which resolves names, converts Piper voices and caches them) so the
engine depends only on this small shape.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from worker.kokoro_voice import KokoroVoice
    from worker.onnx_runner import OnnxVoice


@dataclass(frozen=True, slots=True)
class Encoded:
    """Token ids for one chunk, and the characters the voice's vocabulary could not represent."""

    ids: list[int]
    dropped: str = ""


@dataclass(frozen=True, slots=True)
class LoadedVoice:
    """A loaded voice. `model` is a `transformers.VitsModel` (or subclass) in fp32 on the CPU, in eval mode;
    None when the voice was loaded for ONNX Runtime only, in which case `onnx` names its ONNX model.
    `speakers`: its speaker count where no model says it (an ONNX-only voice: from its config)."""

    name: str
    model: Any
    sample_rate_hz: int
    language: str
    encode: Callable[[str], Encoded]
    kokoro: KokoroVoice | None = None  # a Kokoro voice (`model`: its PyTorch model, None for ONNX only)
    folder: Path | None = None
    onnx: OnnxVoice | None = None
    speakers: int | None = None

    @property
    def num_speakers(self) -> int:
        """How many speakers the voice has (1: a single-speaker voice): `speakers`, else the model's config."""
        if self.speakers is not None:
            return self.speakers
        config = getattr(self.model, "config", None)
        return max(int(getattr(config, "num_speakers", 1) or 1), 1)


def load_folder_voice(folder: Path, name: str | None = None, language: str = "en") -> LoadedVoice:
    """Load a `save_pretrained` VITS folder with its `VitsTokenizer` (characters outside the vocabulary are
    reported as dropped, never lost silently)."""
    from transformers import AutoTokenizer, VitsModel

    model = VitsModel.from_pretrained(folder, trust_remote_code=False).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=False)  # never run a folder's code
    vocab = set(tokenizer.get_vocab())

    def encode(text: str) -> Encoded:
        prepared = tokenizer.normalize_text(text) if getattr(tokenizer, "normalize", False) else text
        dropped = "".join(sorted({c for c in prepared if c not in vocab and not c.isspace()}))
        ids = tokenizer(text)["input_ids"]
        return Encoded(ids=list(ids), dropped=dropped)

    return LoadedVoice(name=name or str(folder), model=model, sample_rate_hz=int(model.config.sampling_rate),
                       language=language, encode=encode, folder=folder)
