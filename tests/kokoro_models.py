"""A small randomly initialized Kokoro, built with the `kokoro` package's own modules and saved as its weights
are published (`config.json` + a `.pth` of per-module state dicts), so `KModel` loads it as it loads
Kokoro-82M. Kokoro's decoder fixes its widths (512 and 1024 channels, a 256-wide style), so "small" means
a one-layer ALBERT of width 32, one layer of duration LSTMs, one resblock kernel per stage and
short durations (about one frame per phoneme).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

TINY_CONFIG: dict[str, Any] = {
    "n_token": 178, "hidden_dim": 512, "style_dim": 128, "n_layer": 1, "max_dur": 2, "dropout": 0.2,
    "text_encoder_kernel_size": 5, "n_mels": 80,
    "plbert": {"hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 64,
               "max_position_embeddings": 512, "num_hidden_layers": 1, "dropout": 0.1},
    "istftnet": {"upsample_kernel_sizes": [20, 12], "upsample_rates": [10, 6], "gen_istft_hop_size": 5,
                 "gen_istft_n_fft": 20, "resblock_dilation_sizes": [[1, 3, 5]], "resblock_kernel_sizes": [3],
                 "upsample_initial_channel": 512},
}


def build_tiny_kokoro(folder: Path, vocab: dict[str, int], seed: int = 0) -> Path:
    """Write a random tiny Kokoro into `folder` (created); returns it. The F0 projection is biased to ~150 Hz
    so the harmonic source (sines, their phase, the voiced/unvoiced switch) is exercised, not only noise."""
    from kokoro.istftnet import Decoder
    from kokoro.modules import CustomAlbert, ProsodyPredictor, TextEncoder
    from transformers import AlbertConfig

    config = {**TINY_CONFIG, "vocab": vocab}
    torch.manual_seed(seed)
    modules = {
        "bert": CustomAlbert(AlbertConfig(vocab_size=config["n_token"], **config["plbert"])),
        "bert_encoder": torch.nn.Linear(config["plbert"]["hidden_size"], config["hidden_dim"]),
        "predictor": ProsodyPredictor(style_dim=config["style_dim"], d_hid=config["hidden_dim"],
                                      nlayers=config["n_layer"], max_dur=config["max_dur"],
                                      dropout=config["dropout"]),
        "text_encoder": TextEncoder(channels=config["hidden_dim"], kernel_size=config["text_encoder_kernel_size"],
                                    depth=config["n_layer"], n_symbols=config["n_token"]),
        "decoder": Decoder(dim_in=config["hidden_dim"], style_dim=config["style_dim"], dim_out=config["n_mels"],
                           **config["istftnet"]),
    }
    with torch.no_grad():
        modules["predictor"].F0_proj.bias.fill_(150.0)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({name: module.state_dict() for name, module in modules.items()}, folder / "kokoro-tiny.pth")
    (folder / "config.json").write_text(json.dumps(config, ensure_ascii=False), encoding="utf-8")
    return folder
