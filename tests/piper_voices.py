"""A tiny multi-speaker Piper voice built with Piper's own training code, for conversion tests.

`build_piper_multispeaker` makes a `SynthesizerTrn` (Piper's VITS generator, `piper.train.vits.models`)
with several speakers and small sizes, gives every weight random values (a fresh model zero-initializes
the flows' output convs and shares identical layer-norm tensors, which the exporter would fold or merge
away; a trained voice has neither), exports it the way `piper.train.export_onnx` does, and writes the
`.onnx.json` a real Piper voice ships with. Piper's `export_onnx` module itself is not imported: it loads
the Lightning checkpoint class (`lightning` is a training-only dependency) and leaves the exporter choice
to torch, whose default is now the dynamo exporter; published Piper voices were made by the TorchScript
exporter, so it is chosen explicitly here.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SPEAKERS = {"p3922": 0, "p8699": 1, "narrator": 2}  # LibriTTS-style ids plus a plain name
SAMPLE_RATE_HZ = 22050
OPSET_VERSION = 15  # piper.train.export_onnx.OPSET_VERSION


@dataclass(frozen=True, slots=True)
class PiperFiles:
    """A Piper voice on disk: the ONNX model and its `.onnx.json` config."""

    onnx_path: Path
    config_path: Path


def _generator(num_symbols: int, num_speakers: int) -> Any:
    """Piper's medium-quality generator layout (ResBlock2, upsampling 8-8-4), with tiny channel counts."""
    from piper.train.vits.models import SynthesizerTrn

    return SynthesizerTrn(
        n_vocab=num_symbols, spec_channels=17, segment_size=32, inter_channels=8, hidden_channels=16,
        filter_channels=32, n_heads=2, n_layers=2, kernel_size=3, p_dropout=0.0, resblock="2",
        resblock_kernel_sizes=(3, 5, 7), resblock_dilation_sizes=((1, 2), (2, 6), (3, 12)),
        upsample_rates=(8, 8, 4), upsample_initial_channel=32, upsample_kernel_sizes=(16, 16, 8),
        n_speakers=num_speakers, gin_channels=8, use_sdp=True)


def _export(model: Any, onnx_path: Path) -> None:
    """`piper.train.export_onnx.main` without the checkpoint loading: the same inference wrapper, input
    names, opset and dynamic axes."""
    import torch

    with torch.no_grad():
        model.dec.remove_weight_norm()

    def infer_forward(text: Any, text_lengths: Any, scales: Any, sid: Any = None) -> Any:
        return model.infer(text, text_lengths, noise_scale=scales[0], length_scale=scales[1],
                           noise_scale_w=scales[2], sid=sid)[0].unsqueeze(1)

    model.forward = infer_forward
    sequences = torch.randint(low=0, high=model.n_vocab, size=(1, 50), dtype=torch.long)
    dummy = (sequences, torch.LongTensor([50]), torch.FloatTensor([0.667, 1.0, 0.8]), torch.LongTensor([0]))
    torch.onnx.export(model, dummy, str(onnx_path), opset_version=OPSET_VERSION, dynamo=False,
                      input_names=["input", "input_lengths", "scales", "sid"], output_names=["output"],
                      dynamic_axes={"input": {0: "batch_size", 1: "phonemes"}, "input_lengths": {0: "batch_size"},
                                    "output": {0: "batch_size", 2: "time"}})


def piper_config(num_symbols: int, speakers: dict[str, int]) -> dict[str, Any]:
    """The `.onnx.json` of a Piper espeak-ng voice (keys as `piper.train` writes them)."""
    from piper.phoneme_ids import DEFAULT_PHONEME_ID_MAP

    return {
        "audio": {"sample_rate": SAMPLE_RATE_HZ, "quality": "medium"},
        "espeak": {"voice": "en-us"},
        "inference": {"noise_scale": 0.667, "length_scale": 1, "noise_w": 0.8},
        "phoneme_type": "espeak", "phoneme_map": {},
        "phoneme_id_map": {k: list(v) for k, v in DEFAULT_PHONEME_ID_MAP.items()},
        "num_symbols": num_symbols, "num_speakers": len(speakers), "speaker_id_map": dict(speakers),
        "piper_version": "1.0.0",
        "language": {"code": "en_US", "family": "en", "region": "US", "name_native": "English",
                     "name_english": "English", "country_english": "United States"},
        "dataset": "tiny-multispeaker",
    }


def build_piper_multispeaker(out_dir: Path, seed: int = 0, speakers: dict[str, int] | None = None) -> PiperFiles:
    """Write `tiny.onnx` + `tiny.onnx.json` (a random multi-speaker Piper voice) into `out_dir`.

    About 160k parameters; building takes a few seconds on 2 CPU cores, mostly the ONNX export's tracing.
    """
    import torch

    speakers = dict(speakers or SPEAKERS)
    num_symbols = 256  # what Piper voices are trained with (room beyond the phoneme map)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = PiperFiles(out_dir / "tiny.onnx", out_dir / "tiny.onnx.json")
    # Piper's training code uses APIs torch now deprecates (torch.jit.script, the old weight_norm, the
    # TorchScript exporter) and the exporter warns about traced shapes: none of it is ttsfleet's to fix.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(seed)
        model = _generator(num_symbols, len(speakers)).eval()
        with torch.no_grad():
            for param in model.parameters():
                param.add_(torch.randn_like(param) * 0.1)
        _export(model, files.onnx_path)
    files.config_path.write_text(json.dumps(piper_config(num_symbols, speakers), ensure_ascii=False, indent=2),
                                 encoding="utf-8")
    return files
