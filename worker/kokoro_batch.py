"""Kokoro-82M run on a padded batch, each item getting what it gets alone (the `kokoro` package's `KModel`
runs one item at a time: padding would leak into it).

What runs batched, and how padding is kept out of it (with the model's own weights and modules):
- The text encoder: its convolutions are masked and its LSTM packed by Kokoro's own code, given the lengths.
- The decoder and the iSTFTNet vocoder, most of the work. AdaIN's instance normalization takes its mean and
  variance over time: here over each item's own frames (`masked_adain`). Convolutions read their
  neighbours: what lies past an item's end is zeroed before every one, as the zero padding of the item
  alone would be. The harmonic source (sines from the F0 curve) and its STFT, and the inverse STFT of the
  output, which reflect-pad and interpolate at the edges, run per item on its own samples (they are tiny).
- Not batched: the durations and the F0 and energy curves (`predict`, one item at a time through Kokoro's
  own modules, so its LSTMs see no padding at all). The F0 curve sets the harmonic source's phase, whose STFT
  angle jumps by 2π in a bin sitting at ±π (and is arbitrary in a near-empty one): a last-bit difference from
  a batched kernel (packed LSTMs give ~1e-6) became sample differences of the order of the signal itself on a
  random model. Per item, the curves and the source are bit for bit what the item gets alone.
- Noise: the harmonic source draws a random initial phase and Gaussian noise. Each item draws its own from
  its own generator (`seeds`), in the order and memory layout `KModel` draws them from the global generator,
  so an item's audio does not depend on its batch mates and equals `KModel`'s after `torch.manual_seed`;
  without seeds there is no noise (as in the int8 ONNX export, which has none).

`fp32` names the `STAGES` that run with autocast off under a low-precision policy.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

# The parts of the model, as `batched_forward` runs them: a policy's fp32 islands are named from these.
STAGES = ("bert", "predictor", "prosody", "text_encoder", "decoder", "generator")


@contextmanager
def _stage(name: str, fp32: frozenset[str], device_type: str) -> Iterator[None]:
    """Autocast off inside stage `name` when it is one of `fp32` (its inputs are then cast up by callers)."""
    with torch.autocast(device_type, enabled=False) if name in fp32 else nullcontext():
        yield


def _float(x: Tensor, fp32: bool) -> Tensor:
    return x.float() if fp32 and x.is_floating_point() else x


def mask_after(x: Tensor, lengths: Tensor) -> Tensor:
    """`x` (B, C, T) with every time step at or past each item's length set to zero."""
    keep = torch.arange(x.shape[-1], device=x.device)[None, :] < lengths.to(x.device)[:, None]
    return x * keep[:, None, :].to(x.dtype)


def masked_adain(norm: Any, x: Tensor, s: Tensor, lengths: Tensor) -> Tensor:
    """Kokoro's `AdaIN1d` with the instance statistics over each item's own frames (in fp32)."""
    h = norm.fc(s)
    gamma, beta = torch.chunk(h.view(h.size(0), h.size(1), 1), chunks=2, dim=1)
    keep = (torch.arange(x.shape[-1], device=x.device)[None, :] < lengths.to(x.device)[:, None])[:, None, :]
    xf, count = x.float(), lengths.to(x.device).float().clamp(min=1)[:, None, None]
    mean = (xf * keep).sum(-1, keepdim=True) / count
    var = (((xf - mean) * keep) ** 2).sum(-1, keepdim=True) / count
    inst = norm.norm
    normed = (xf - mean) / torch.sqrt(var + inst.eps)
    if inst.affine:
        normed = normed * inst.weight.float()[None, :, None] + inst.bias.float()[None, :, None]
    return (1 + gamma) * normed.to(gamma.dtype) + beta


def adain_block(block: Any, x: Tensor, s: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
    """Kokoro's `AdainResBlk1d` on a padded batch; returns the output and its lengths (doubled when the
    block upsamples)."""
    up = block.upsample_type != "none"
    out_lengths = lengths * 2 if up else lengths
    h = block.actv(masked_adain(block.norm1, x, s, lengths))
    if up:
        h = block.pool(mask_after(h, lengths))
    h = block.conv1(mask_after(h, out_lengths))
    h = block.actv(masked_adain(block.norm2, h, s, out_lengths))
    h = block.conv2(mask_after(h, out_lengths))
    return (h + block._shortcut(x)) * (1 / math.sqrt(2)), out_lengths


def adain_resblock1(block: Any, x: Tensor, s: Tensor, lengths: Tensor) -> Tensor:
    """The generator's `AdaINResBlock1` (snake activations) on a padded batch."""
    for c1, c2, n1, n2, a1, a2 in zip(block.convs1, block.convs2, block.adain1, block.adain2, block.alpha1,
                                      block.alpha2, strict=True):
        xt = masked_adain(n1, x, s, lengths)
        xt = c1(mask_after(xt + (1 / a1) * (torch.sin(a1 * xt) ** 2), lengths))
        xt = masked_adain(n2, xt, s, lengths)
        xt = c2(mask_after(xt + (1 / a2) * (torch.sin(a2 * xt) ** 2), lengths))
        x = xt + x
    return x


def harmonic_source(source: Any, f0: Tensor, generator: torch.Generator | None) -> Tensor:
    """Kokoro's `SourceModuleHnNSF` for one item's upsampled F0 (1, S, 1): its harmonic excitation (1, S).
    Its noise comes from `generator` (None: no noise), drawn as `KModel` draws it from the global one."""
    sine_gen = source.l_sin_gen
    harmonics = torch.arange(1, sine_gen.harmonic_num + 2, device=f0.device, dtype=f0.dtype)
    fn = f0 * harmonics
    rad = (fn / sine_gen.sampling_rate) % 1
    noise = torch.zeros_like(fn)
    if generator is not None:
        initial = torch.rand(1, fn.shape[2], generator=generator, device=generator.device).to(fn.device)
        initial[:, 0] = 0
        rad[:, 0, :] = rad[:, 0, :] + initial
        # KModel's randn_like fills a tensor laid out as its sines are (harmonics outermost): drawn into the
        # same layout, the same numbers come out
        n, h = fn.shape[1], fn.shape[2]
        noise = torch.empty_strided((1, n, h), (h * n, 1, n), device=generator.device).normal_(generator=generator)
        noise = noise.to(fn.device)
    scale = sine_gen.upsample_scale
    down = F.interpolate(rad.transpose(1, 2), scale_factor=1 / scale, mode="linear").transpose(1, 2)
    phase = torch.cumsum(down, dim=1) * 2 * torch.pi
    phase = F.interpolate(phase.transpose(1, 2) * scale, scale_factor=scale, mode="linear").transpose(1, 2)
    uv = (f0 > sine_gen.voiced_threshold).to(f0.dtype)
    amplitude = uv * sine_gen.noise_std + (1 - uv) * sine_gen.sine_amp / 3
    waves = torch.sin(phase) * sine_gen.sine_amp * uv + amplitude * noise
    return torch.tanh(source.l_linear(waves)).transpose(1, 2).squeeze(1)


def source_spectra(gen: Any, f0_curve: Tensor, lengths: Tensor,
                   generators: Sequence[torch.Generator] | None) -> Tensor:
    """The harmonic source's STFT (magnitude and phase, B x (n_fft + 2) x frames, zero past each item's
    end), item by item on its own samples: a last-bit difference in the source moves a near-empty bin's
    phase by up to 2π, so it must be bit for bit what the item gets alone."""
    spectra = []
    for i, n in enumerate(lengths.tolist()):
        f0 = gen.f0_upsamp(f0_curve[i: i + 1, None, :n]).transpose(1, 2)
        source = harmonic_source(gen.m_source, f0, generators[i] if generators is not None else None)
        # in fp32 whatever autocast made of the source: cuFFT takes half precision at power-of-two sizes only
        spectra.append(torch.cat(gen.stft.transform(source.float()), dim=1))
    har = f0_curve.new_zeros(len(spectra), spectra[0].shape[1], max(h.shape[-1] for h in spectra))
    for i, h in enumerate(spectra):
        har[i, :, : h.shape[-1]] = h
    return har


def generate(gen: Any, x: Tensor, s: Tensor, f0_curve: Tensor, lengths: Tensor,
             generators: Sequence[torch.Generator] | None) -> list[Tensor]:
    """Kokoro's iSTFTNet `Generator` on a padded batch; one waveform per item, each at its own length."""
    har = source_spectra(gen, f0_curve, lengths, generators)
    for i in range(gen.num_upsamples):
        x = F.leaky_relu(x, negative_slope=0.1)
        last = i == gen.num_upsamples - 1
        rate = gen.ups[i].stride[0]
        x_lengths = lengths * rate + (1 if last else 0)
        x_source = adain_resblock1(gen.noise_res[i], gen.noise_convs[i](har), s, x_lengths)
        x = gen.ups[i](mask_after(x, lengths))
        if last:
            x = gen.reflection_pad(x)
        x, lengths = x + x_source, x_lengths
        blocks = gen.resblocks[i * gen.num_kernels: (i + 1) * gen.num_kernels]
        x = sum((adain_resblock1(block, x, s, lengths) for block in blocks), torch.zeros_like(x)) / gen.num_kernels
    x = gen.conv_post(mask_after(F.leaky_relu(x), lengths))
    bins = gen.post_n_fft // 2 + 1
    spec, phase = torch.exp(x[:, :bins, :].float()), torch.sin(x[:, bins:, :].float())
    return [gen.stft.inverse(spec[i:i + 1, :, :n], phase[i:i + 1, :, :n]).reshape(-1)
            for i, n in enumerate(lengths.tolist())]


def decode(dec: Any, asr: Tensor, f0_curve: Tensor, n_curve: Tensor, s: Tensor, frames: Tensor,
           generators: Sequence[torch.Generator] | None, fp32: frozenset[str], device_type: str) -> list[Tensor]:
    """Kokoro's `Decoder` on a padded batch: aligned text features (B, C, F), F0 and energy (B, 2F)."""
    with _stage("decoder", fp32, device_type):
        asr, f0_curve, n_curve, s = (_float(t, "decoder" in fp32) for t in (asr, f0_curve, n_curve, s))
        f0 = dec.F0_conv(mask_after(f0_curve.unsqueeze(1), frames * 2))
        n = dec.N_conv(mask_after(n_curve.unsqueeze(1), frames * 2))
        x, lengths = adain_block(dec.encode, torch.cat([asr, f0, n], dim=1), s, frames)
        asr_res = dec.asr_res(asr)
        residual = True
        for block in dec.decode:
            if residual:
                x = torch.cat([x, asr_res, f0, n], dim=1)
            x, lengths = adain_block(block, x, s, lengths)
            residual = block.upsample_type == "none"
    with _stage("generator", fp32, device_type):
        x, s, f0_curve = (_float(t, "generator" in fp32) for t in (x, s, f0_curve))
        return generate(dec.generator, x, s, f0_curve, lengths, generators)


def batched_forward(model: Any, ids: Sequence[Sequence[int]], ref_s: Tensor, speed: float = 1.0,
                    seeds: Sequence[int] | None = None, fp32: Sequence[str] = ()) -> list[Tensor]:
    """Kokoro-82M (`kokoro.model.KModel`) on a batch of phoneme-id lists (without the boundary tokens, which
    are added here): one float waveform per item, each what it gets alone, and what
    `KModel.forward_with_tokens` gives for it after `torch.manual_seed(seed)` (no noise without `seeds`).

    The durations and the F0 and energy curves are predicted item by item (`predict`): the F0 curve sets the
    phase of the harmonic source, whose STFT angle jumps by 2π where a bin's phase sits at ±π, so a last-bit
    difference from a batched kernel would become an audible one. The text encoder, the decoder and the
    vocoder, most of the work, run as one padded batch.

    `ref_s` (B, 256): each item's style vector. `speed` (2.0: half as long) is one per batch. `fp32`: the
    `STAGES` run with autocast off under an autocast context the caller opened. Each item holds at most
    `model.context_length` - 2 ids. Raises what the model raises (torch.OutOfMemoryError included).
    """
    device = next(model.parameters()).device
    islands = frozenset(fp32)
    ref_s = ref_s.to(device)
    predicted = [predict(model, item, ref_s[row: row + 1], speed, islands) for row, item in enumerate(ids)]
    lengths = torch.tensor([len(item) + 2 for item in ids], device=device)
    input_ids = torch.zeros(len(ids), int(lengths.max()), dtype=torch.long, device=device)
    for row, item in enumerate(ids):
        input_ids[row, 1: len(item) + 1] = torch.tensor(list(item), dtype=torch.long)
    frames = torch.tensor([int(p.frames_per_token.sum()) for p in predicted], device=device)
    alignment = torch.zeros(len(ids), input_ids.shape[1], int(frames.max()), device=device)
    f0_curve = torch.zeros(len(ids), 2 * int(frames.max()), device=device)
    n_curve = torch.zeros_like(f0_curve)
    for row, p in enumerate(predicted):
        alignment[row, : p.alignment.shape[0], : p.alignment.shape[1]] = p.alignment
        f0_curve[row, : p.f0.shape[0]], n_curve[row, : p.n.shape[0]] = p.f0, p.n
    with _stage("text_encoder", islands, device.type):
        pad = torch.arange(input_ids.shape[1], device=device)[None, :] >= lengths[:, None]
        t_en = model.text_encoder(input_ids, lengths, pad)
    generators = None if seeds is None else [_generator(seed, device) for seed in seeds]
    return decode(model.decoder, t_en @ alignment.to(t_en.dtype), f0_curve, n_curve, ref_s[:, :128], frames,
                  generators, islands, device.type)


@dataclass(frozen=True, slots=True)
class Prosody:
    """One item's predicted durations (frames per input token), alignment (tokens x frames), F0 and energy
    (2 x frames each)."""

    frames_per_token: Tensor
    alignment: Tensor
    f0: Tensor
    n: Tensor


def predict(model: Any, ids: Sequence[int], ref_s: Tensor, speed: float, fp32: frozenset[str] = frozenset()) -> Prosody:
    """Durations, F0 and energy of one item (ids without the boundary tokens; `ref_s` (1, 256)), computed by
    the model's own modules exactly as `KModel.forward_with_tokens` computes them (one item: no padding)."""
    device = ref_s.device
    input_ids = torch.tensor([[0, *ids, 0]], dtype=torch.long, device=device)
    lengths = torch.tensor([input_ids.shape[1]], device=device)
    no_pad = torch.zeros_like(input_ids, dtype=torch.bool)
    with _stage("bert", fp32, device.type):
        d_en = model.bert_encoder(model.bert(input_ids, attention_mask=(~no_pad).int())).transpose(-1, -2)
    with _stage("predictor", fp32, device.type):
        s = _float(ref_s[:, 128:], "predictor" in fp32)
        d = model.predictor.text_encoder(_float(d_en, "predictor" in fp32), s, lengths, no_pad)
        x, _ = model.predictor.lstm(d)
        duration = torch.sigmoid(model.predictor.duration_proj(x)).float().sum(dim=-1) / speed
    frames_per_token = torch.round(duration).clamp(min=1).long()[0]
    tokens = torch.repeat_interleave(torch.arange(input_ids.shape[1], device=device), frames_per_token)
    alignment = torch.zeros(input_ids.shape[1], tokens.shape[0], device=device)
    alignment[tokens, torch.arange(tokens.shape[0], device=device)] = 1
    with _stage("prosody", fp32, device.type):
        en = _float(d.transpose(-1, -2) @ alignment.to(d.dtype)[None], "prosody" in fp32)
        f0, n = model.predictor.F0Ntrain(en, _float(ref_s[:, 128:], "prosody" in fp32))
    return Prosody(frames_per_token, alignment, f0[0].float(), n[0].float())


def _generator(seed: int, device: torch.device) -> torch.Generator:
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    return gen
