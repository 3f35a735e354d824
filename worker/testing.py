"""Test helpers that ship with ttsfleet: a tiny random transformers VITS (about 18k parameters) built
offline, for tests, benchmarks and smoke checks on a machine without a voice (no hub access needed)."""

from __future__ import annotations

import json
from pathlib import Path

CHARS = list(" abcdefghijklmnopqrstuvwxyz'.,?!-")


def build_tiny_vits(out_dir: Path, seed: int = 0, speakers: tuple[str, ...] = (), width: int = 16) -> Path:
    """Save a random `VitsModel` + char `VitsTokenizer` into `out_dir` (16 kHz); returns `out_dir`.

    `speakers` (two or more names) makes a multi-speaker model (speaker embeddings conditioning the
    duration predictor, flow, posterior encoder and decoder, as in Piper's multi-speaker voices), with
    the names in `ttsfleet_voice.json`'s `speaker_id_map`. `width` scales the hidden sizes: 16 is tiny
    (tests); 256 runs near 8x real time on one CPU thread, the order of a real voice (benchmarks that need
    synthesis, not overhead, to dominate)."""
    from transformers import VitsConfig, VitsModel, VitsTokenizer, set_seed

    out_dir.mkdir(parents=True, exist_ok=True)
    vocab = {"_": 0, **{c: i + 1 for i, c in enumerate(CHARS)}}
    vocab["<unk>"] = len(vocab)
    vocab_file = out_dir / "vocab.json"
    vocab_file.write_text(json.dumps(vocab))
    VitsTokenizer(str(vocab_file), pad_token="_", unk_token="<unk>", add_blank=True, normalize=True,
                  phonemize=False).save_pretrained(out_dir)
    config = VitsConfig(
        vocab_size=len(vocab), hidden_size=width, num_hidden_layers=1, num_attention_heads=2, window_size=2,
        ffn_dim=width, flow_size=8, spectrogram_bins=16, upsample_initial_channel=width, upsample_rates=[8, 8, 4],
        upsample_kernel_sizes=[16, 16, 8], resblock_kernel_sizes=[3], resblock_dilation_sizes=[[1, 3]],
        prior_encoder_num_flows=1, prior_encoder_num_wavenet_layers=1, posterior_encoder_num_wavenet_layers=1,
        duration_predictor_num_flows=1, depth_separable_num_layers=1, duration_predictor_filter_channels=width,
        sampling_rate=16000, pad_token_id=0,
        num_speakers=max(len(speakers), 1), speaker_embedding_size=8 if len(speakers) > 1 else 0,
    )
    if len(speakers) > 1:
        speaker_map = {name: i for i, name in enumerate(speakers)}
        (out_dir / "ttsfleet_voice.json").write_text(json.dumps({"language": "en", "speaker_id_map": speaker_map}))
    set_seed(seed)
    VitsModel(config).save_pretrained(out_dir)
    return out_dir
