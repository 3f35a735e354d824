"""Piper voices as transformers models: the ONNX -> `VitsModel` converter (single- and multi-speaker voices)
and the ResBlock2 decoder (the text encoder and config reader live in the torch-free `worker.phonemes`,
re-exported here).

Piper is a fork of the original VITS, so its ONNX initializers keep the original module paths; the mapping
to transformers names follows transformers' `convert_original_checkpoint.py` (research/models.md §4b, §7).
Imports torch and transformers: keep this module out of the `ttsfleet --help` import path (import it
inside functions). onnx and piper are imported only where they are needed (the optional `voice` extra).
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import VitsConfig, VitsModel
from transformers.models.vits.modeling_vits import VitsStochasticDurationPredictor

from schemas.errors import PermanentError
from schemas.voices import VOICE_EXTRA_HINT
from worker.phonemes import PIPER_CONFIG_FILE, PiperEncoder, is_piper_folder, read_piper_config

__all__ = ["PIPER_CONFIG_FILE", "PiperEncoder", "PiperVitsModel", "convert_piper", "is_piper_folder",
           "read_piper_config"]
_TE, _DP = "text_encoder.encoder.layers", "duration_predictor"
_LN = {"gamma": "weight", "beta": "bias"}


def _prior(m: re.Match[str]) -> int:  # Piper interleaves Flip modules between the prior flows
    return int(m[1]) // 2


def _dur(m: re.Match[str]) -> int:  # duration flows: 0 is the ElementwiseAffine
    return int(m[1]) // 2 + 1


# Regex on the original VITS name -> name in transformers' VitsModel.
RULES: list[tuple[str, Callable[[re.Match[str]], str]]] = [
    (r"enc_p\.emb\.weight", lambda m: "text_encoder.embed_tokens.weight"),
    (r"enc_p\.encoder\.attn_layers\.(\d+)\.conv_([qkv])\.(weight|bias)",
     lambda m: f"{_TE}.{m[1]}.attention.{m[2]}_proj.{m[3]}"),
    (r"enc_p\.encoder\.attn_layers\.(\d+)\.conv_o\.(weight|bias)", lambda m: f"{_TE}.{m[1]}.attention.out_proj.{m[2]}"),
    (r"enc_p\.encoder\.attn_layers\.(\d+)\.emb_rel_([kv])", lambda m: f"{_TE}.{m[1]}.attention.emb_rel_{m[2]}"),
    (r"enc_p\.encoder\.norm_layers_1\.(\d+)\.(gamma|beta)", lambda m: f"{_TE}.{m[1]}.layer_norm.{_LN[m[2]]}"),
    (r"enc_p\.encoder\.norm_layers_2\.(\d+)\.(gamma|beta)", lambda m: f"{_TE}.{m[1]}.final_layer_norm.{_LN[m[2]]}"),
    (r"enc_p\.encoder\.ffn_layers\.(\d+)\.conv_([12])\.(weight|bias)",
     lambda m: f"{_TE}.{m[1]}.feed_forward.conv_{m[2]}.{m[3]}"),
    (r"enc_p\.proj\.(weight|bias)", lambda m: f"text_encoder.project.{m[1]}"),
    (r"dec\.conv_(pre|post)\.(weight|bias)", lambda m: f"decoder.conv_{m[1]}.{m[2]}"),
    (r"dec\.ups\.(\d+)\.(weight|bias)", lambda m: f"decoder.upsampler.{m[1]}.{m[2]}"),
    (r"dec\.resblocks\.(\d+)\.(convs[12]?)\.(\d+)\.(weight|bias)",
     lambda m: f"decoder.resblocks.{m[1]}.{m[2]}.{m[3]}.{m[4]}"),
    (r"flow\.flows\.(\d+)\.(pre|post)\.(weight|bias)", lambda m: f"flow.flows.{_prior(m)}.conv_{m[2]}.{m[3]}"),
    (r"flow\.flows\.(\d+)\.enc\.(in_layers|res_skip_layers)\.(\d+)\.(weight|bias)",
     lambda m: f"flow.flows.{_prior(m)}.wavenet.{m[2]}.{m[3]}.{m[4]}"),
    (r"dp\.(pre|proj)\.(weight|bias)", lambda m: f"{_DP}.conv_{m[1]}.{m[2]}"),
    (r"dp\.convs\.convs_sep\.(\d+)\.(weight|bias)", lambda m: f"{_DP}.conv_dds.convs_dilated.{m[1]}.{m[2]}"),
    (r"dp\.convs\.convs_1x1\.(\d+)\.(weight|bias)", lambda m: f"{_DP}.conv_dds.convs_pointwise.{m[1]}.{m[2]}"),
    (r"dp\.convs\.norms_([12])\.(\d+)\.(gamma|beta)", lambda m: f"{_DP}.conv_dds.norms_{m[1]}.{m[2]}.{_LN[m[3]]}"),
    (r"dp\.flows\.0\.m", lambda m: f"{_DP}.flows.0.translate"),
    (r"dp\.flows\.(\d+)\.(pre|proj)\.(weight|bias)", lambda m: f"{_DP}.flows.{_dur(m)}.conv_{m[2]}.{m[3]}"),
    (r"dp\.flows\.(\d+)\.convs\.convs_sep\.(\d+)\.(weight|bias)",
     lambda m: f"{_DP}.flows.{_dur(m)}.conv_dds.convs_dilated.{m[2]}.{m[3]}"),
    (r"dp\.flows\.(\d+)\.convs\.convs_1x1\.(\d+)\.(weight|bias)",
     lambda m: f"{_DP}.flows.{_dur(m)}.conv_dds.convs_pointwise.{m[2]}.{m[3]}"),
    (r"dp\.flows\.(\d+)\.convs\.norms_([12])\.(\d+)\.(gamma|beta)",
     lambda m: f"{_DP}.flows.{_dur(m)}.conv_dds.norms_{m[2]}.{m[3]}.{_LN[m[4]]}"),
    # multi-speaker voices: the speaker embedding and the layers it conditions (VITS's `g`, Piper's `sid`)
    (r"emb_g\.weight", lambda m: "embed_speaker.weight"),
    (r"dp\.cond\.(weight|bias)", lambda m: f"{_DP}.cond.{m[1]}"),
    (r"dec\.cond\.(weight|bias)", lambda m: f"decoder.cond.{m[1]}"),
    (r"flow\.flows\.(\d+)\.enc\.cond_layer\.(weight|bias)",
     lambda m: f"flow.flows.{_prior(m)}.wavenet.cond_layer.{m[2]}"),
]


class ResBlock2(nn.Module):
    """HiFi-GAN residual block type 2 (original VITS, Piper low/medium): `x += conv_d(leaky_relu(x))` per
    dilation d. Stock transformers `VitsModel` implements only type 1."""

    def __init__(self, channels: int, kernel_size: int = 3, dilation: Sequence[int] = (1, 3),
                 leaky_relu_slope: float = 0.1) -> None:
        super().__init__()
        self.leaky_relu_slope = leaky_relu_slope
        self.convs = nn.ModuleList(
            nn.Conv1d(channels, channels, kernel_size, 1, dilation=d, padding=(kernel_size * d - d) // 2)
            for d in dilation)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        for conv in self.convs:
            hidden_states = hidden_states + conv(nn.functional.leaky_relu(hidden_states, self.leaky_relu_slope))
        return hidden_states

    def apply_weight_norm(self) -> None:  # same interface as transformers' HifiGanResidualBlock
        for conv in self.convs:
            nn.utils.parametrizations.weight_norm(conv)

    def remove_weight_norm(self) -> None:
        for conv in self.convs:
            nn.utils.parametrize.remove_parametrizations(conv, "weight")


class PiperVitsModel(VitsModel):
    """`VitsModel` for converted Piper voices.

    `config.resblock_type == "2"` swaps the decoder's residual blocks for `ResBlock2`; with
    `config.inference_only` the modules inference never runs (posterior encoder, the duration predictor's
    posterior flows and its first ConvFlow, which VITS skips in reverse mode) are not built, so the saved
    folder holds only used weights and `from_pretrained` finds every weight it expects.
    """

    def __init__(self, config: VitsConfig) -> None:
        super().__init__(config)
        if str(getattr(config, "resblock_type", "1")) == "2":
            self.decoder.resblocks = nn.ModuleList(
                ResBlock2(config.upsample_initial_channel // 2 ** (i + 1), k, d, config.leaky_relu_slope)
                for i in range(len(config.upsample_rates))
                for k, d in zip(config.resblock_kernel_sizes, config.resblock_dilation_sizes, strict=True))
        if getattr(config, "inference_only", False):
            del self.posterior_encoder
            predictor = self.duration_predictor
            for name in ("post_conv_pre", "post_conv_proj", "post_conv_dds", "post_flows"):
                if hasattr(predictor, name):
                    delattr(predictor, name)
            if isinstance(predictor, VitsStochasticDurationPredictor) and len(predictor.flows) > 1:
                predictor.flows[1] = nn.Identity()  # keeps the indices the reverse pass relies on
        self.post_init()


# --------------------------------------------------------------------------- ONNX -> state dict


def _first_consumers(graph: Any, names: set[str]) -> dict[str, str]:
    """Initializer name -> name of the first node that reads it."""
    consumer: dict[str, str] = {}
    for node in graph.node:
        for x in node.input:
            if x in names:
                consumer.setdefault(x, node.name)
    return consumer


def onnx_state(onnx_path: Path) -> dict[str, np.ndarray]:
    """ONNX initializers keyed by original VITS module paths.

    Export quirks are resolved through the node that consumes the tensor: the text embedding may be
    called `sid`; the flow WaveNet convs (their speaker `cond_layer` too) are anonymous `onnx::Conv_N`
    (weight norm folded); `dp.flows.0.logs` is constant-folded either to `exp(-logs)` or to `-logs`
    (an anonymous `onnx::Exp_N`), depending on the exporter version. A multi-speaker voice adds
    `emb_g.weight` (read by the `sid` Gather) and the `cond` layers it feeds. Raises PermanentError for a
    file that is not a Piper VITS graph (or has speaker-conditioned layers but no speaker embedding).
    """
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError as err:
        raise PermanentError(f"converting a Piper voice needs onnx: {VOICE_EXTRA_HINT}") from err
    try:
        graph = onnx.load(str(onnx_path)).graph
    except Exception as err:
        raise PermanentError(f"cannot read Piper ONNX model {onnx_path}: {err}") from err
    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    consumer = _first_consumers(graph, set(inits))
    state: dict[str, np.ndarray] = {}
    for name, arr in inits.items():
        node = consumer.get(name, "")
        if re.match(r"(enc_p|dec|flow|dp)\.", name):
            state[name] = arr
        elif node == "/enc_p/emb/Gather":
            state["enc_p.emb.weight"] = arr
        elif node == "/emb_g/Gather":
            state["emb_g.weight"] = arr
        elif name.startswith("onnx::Conv_") and (m := re.fullmatch(r"/(.*)/Conv", node)):
            state[m[1].replace("/", ".") + ".weight"] = arr
        elif name.startswith("onnx::Exp_") and node == "/dp/flows.0/Exp":
            state["dp.flows.0.neg_logs"] = arr  # the Exp's input, `-logs`, with the Neg folded in
        elif name == "/dp/flows.0/Exp_output_0":
            state["dp.flows.0.exp_neg_logs"] = arr
    if "enc_p.emb.weight" not in state or not any(k.startswith("dec.") for k in state):
        raise PermanentError(f"{onnx_path} does not look like a Piper VITS voice (no text embedding or decoder)")
    if "emb_g.weight" not in state and any(".cond." in k or ".cond_layer." in k for k in state):
        raise PermanentError(f"{onnx_path}: speaker-conditioned layers without a speaker embedding (emb_g); "
                             f"not a Piper voice export this converter understands")
    return state


def piper_vits_config(state: dict[str, np.ndarray], pcfg: dict[str, Any]) -> VitsConfig:
    """A `VitsConfig` for the Piper voice: sizes from tensor shapes (speaker count and embedding size from
    `emb_g`), upsampling/resblocks from Piper's per-tier defaults (ResBlock2 -> low/medium, ResBlock1 ->
    high), sample rate and noise from the config."""
    def count(pattern: str) -> int:
        return len({m[1] for k in state if (m := re.fullmatch(pattern, k))})

    ups = [state[f"dec.ups.{i}.weight"] for i in range(count(r"dec\.ups\.(\d+)\.weight"))]
    rb2 = any(re.match(r"dec\.resblocks\.\d+\.convs\.", k) for k in state)
    if rb2:
        rates, kernels, dilations = [8, 8, 4], [3, 5, 7], [[1, 2], [2, 6], [3, 12]]
    else:
        rates, kernels, dilations = [8, 8, 2, 2], [3, 7, 11], [[1, 3, 5]] * 3
    n_vocab, hidden = state["enc_p.emb.weight"].shape
    rel_k = state["enc_p.encoder.attn_layers.0.emb_rel_k"]
    ffn = state["enc_p.encoder.ffn_layers.0.conv_1.weight"]
    inference = pcfg.get("inference", {})
    num_speakers, speaker_size = state["emb_g.weight"].shape if "emb_g.weight" in state else (1, 0)
    config = VitsConfig(
        vocab_size=int(n_vocab), hidden_size=int(hidden), num_attention_heads=int(hidden // rel_k.shape[-1]),
        num_hidden_layers=count(r"enc_p\.encoder\.attn_layers\.(\d+)\.conv_q\.weight"),
        window_size=int((rel_k.shape[1] - 1) // 2), ffn_dim=int(ffn.shape[0]), ffn_kernel_size=int(ffn.shape[-1]),
        flow_size=int(state["enc_p.proj.weight"].shape[0] // 2), spectrogram_bins=513,
        use_stochastic_duration_prediction=True, upsample_initial_channel=int(ups[0].shape[0]),
        upsample_rates=rates, upsample_kernel_sizes=[int(w.shape[-1]) for w in ups],
        resblock_kernel_sizes=kernels, resblock_dilation_sizes=dilations,
        prior_encoder_num_flows=count(r"flow\.flows\.(\d+)\.pre\.weight"),
        prior_encoder_num_wavenet_layers=count(r"flow\.flows\.0\.enc\.in_layers\.(\d+)\.weight"),
        wavenet_kernel_size=int(state["flow.flows.0.enc.in_layers.0.weight"].shape[-1]),
        sampling_rate=int(pcfg["audio"]["sample_rate"]),
        noise_scale=float(inference.get("noise_scale", 0.667)),
        noise_scale_duration=float(inference.get("noise_w", 0.8)),
        speaking_rate=1.0 / float(inference.get("length_scale", 1.0)),
        num_speakers=int(num_speakers), speaker_embedding_size=int(speaker_size),
        pad_token_id=0, layerdrop=0.0,
    )
    config.resblock_type = "2" if rb2 else "1"  # extra keys survive save/load in config.json
    config.inference_only = True
    return config


def _set_param(model: Any, path: str, value: np.ndarray) -> None:
    mod_path, attr = path.rsplit(".", 1)
    mod = model.get_submodule(mod_path)
    tensor = torch.from_numpy(np.array(value, dtype=np.float32))  # a writable copy
    wn = getattr(mod, "parametrizations", None)
    if attr == "weight" and wn is not None and "weight" in wn:
        # transformers keeps weight norm on the flow WaveNet convs: g = ||w||, v = w gives back w exactly
        dims = tuple(range(1, tensor.dim()))
        wn.weight.original0.data.copy_(torch.linalg.vector_norm(tensor, dim=dims, keepdim=True))
        wn.weight.original1.data.copy_(tensor)
        return
    target = getattr(mod, attr)
    if tensor.dim() == target.dim() + 1 and tensor.shape[-1] == 1:
        tensor = tensor.squeeze(-1)  # conv_q/k/v/o: Conv1d(k=1) in VITS, Linear in transformers
    if tensor.shape != target.shape:
        raise PermanentError(f"Piper tensor for {path} has shape {tuple(tensor.shape)}, expected "
                             f"{tuple(target.shape)}")
    target.data.copy_(tensor)


# --------------------------------------------------------------------------- conversion


def convert_piper(onnx_path: Path, config_path: Path, out_dir: Path) -> Path:
    """Convert a Piper voice (`.onnx` + `.onnx.json`) into a transformers folder at `out_dir` (created).

    Writes `config.json` + `model.safetensors` (fp32, inference weights only; load with `PiperVitsModel`),
    a `VitsTokenizer` over the phoneme map, and the Piper config as `piper_voice.json`. Takes ~10 s on
    2 CPU cores. Raises PermanentError on unreadable input, unmapped tensors or missing `onnx`.
    """
    from transformers import VitsTokenizer

    pcfg = read_piper_config(config_path)
    state = onnx_state(Path(onnx_path))
    id_map = {k: v[0] for k, v in pcfg["phoneme_id_map"].items()}
    n_vocab = state["enc_p.emb.weight"].shape[0]
    if max(id_map.values()) >= n_vocab:
        raise PermanentError(f"{config_path}: phoneme ids reach {max(id_map.values())} but the model has "
                             f"{n_vocab} symbols; config and ONNX do not belong together")
    _check_speakers(pcfg, state, config_path)
    with torch.no_grad():
        model = PiperVitsModel(piper_vits_config(state, pcfg)).eval()
        unmapped = _load_state(model, state)
    if unmapped:
        raise PermanentError(f"{onnx_path}: {len(unmapped)} tensors not understood, e.g. {unmapped[0]}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    vocab = dict(id_map)
    if max(vocab.values()) + 1 < n_vocab:
        vocab.setdefault("<unk>", max(vocab.values()) + 1)
    with tempfile.TemporaryDirectory() as tmp:
        vocab_file = Path(tmp) / "vocab.json"
        vocab_file.write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
        VitsTokenizer(str(vocab_file), pad_token="_", unk_token="<unk>", add_blank=True, normalize=False,
                      phonemize=False).save_pretrained(out_dir)
    (out_dir / PIPER_CONFIG_FILE).write_text(json.dumps(pcfg, ensure_ascii=False, indent=1), encoding="utf-8")
    return out_dir


def _check_speakers(pcfg: dict[str, Any], state: dict[str, np.ndarray], config_path: Path) -> None:
    """The config's `num_speakers` and `speaker_id_map` must fit the model's speaker embedding (the map is
    what `NAME#SPEAKER` names resolve through). Raises PermanentError when they do not."""
    rows = int(state["emb_g.weight"].shape[0]) if "emb_g.weight" in state else 1
    declared = pcfg.get("num_speakers", rows)
    if declared != rows:
        raise PermanentError(f"{config_path}: num_speakers is {declared} but the model has {rows} speaker "
                             f"embeddings; config and ONNX do not belong together")
    id_map = pcfg.get("speaker_id_map") or {}
    bad = ({k: v for k, v in id_map.items() if not isinstance(v, int) or not 0 <= v < rows}
           if isinstance(id_map, dict) else id_map)
    if bad:
        raise PermanentError(f"{config_path}: speaker_id_map must map names to ids 0-{rows - 1}, got "
                             f"{str(bad)[:120]}")


def _load_state(model: Any, state: dict[str, np.ndarray]) -> list[str]:
    """Copy the Piper tensors into `model`; returns the names no rule maps."""
    unmapped = []
    for name, arr in state.items():
        if name == "dp.flows.0.exp_neg_logs":  # reverse ElementwiseAffine computes (x - m) * exp(-logs)
            _set_param(model, f"{_DP}.flows.0.log_scale", -np.log(arr))
            continue
        if name == "dp.flows.0.neg_logs":
            _set_param(model, f"{_DP}.flows.0.log_scale", -arr)
            continue
        for pattern, target in RULES:
            if m := re.fullmatch(pattern, name):
                _set_param(model, target(m), arr)
                break
        else:
            unmapped.append(name)
    return unmapped
