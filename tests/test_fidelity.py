"""The fidelity measure (log-mel distance, SNR, lengths) and the start-up check that keeps a policy's
offending modules in fp32: a policy below the bar is never kept. Degradations are injected into one module's
output while it runs under autocast (what bf16 does to a HiFi-GAN decoder, exaggerated)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.test_engine import CPU_BF16
from worker.device import DeviceInfo, detect_device
from worker.engine import start_engine
from worker.fidelity import DEFAULT_BAR, SNR_CEILING_DB, Fidelity, FidelityBar, compare
from worker.loaded_voice import LoadedVoice, load_folder_voice
from worker.precision import VITS_FP32_MODULES, choose_policy

RATE = 22050


def _speechlike(seconds: float = 1.0, seed: int = 0) -> np.ndarray:
    """Harmonics with a syllable-rate envelope: something with a spectrum to compare."""
    t = np.arange(int(seconds * RATE)) / RATE
    tone = sum(np.sin(2 * np.pi * 140 * k * t + k) / k for k in range(1, 12))
    envelope = 0.5 * (1 + np.sin(2 * np.pi * 4 * t + seed))
    return (0.2 * tone * envelope).astype(np.float32)


def test_identical_audio_is_perfect_and_noise_lowers_the_snr_as_predicted() -> None:
    clean = [_speechlike(1.0), _speechlike(0.7, seed=1)]
    same = compare(clean, [c.copy() for c in clean], RATE)
    assert same == Fidelity(mel_distance_db=0.0, snr_db=SNR_CEILING_DB, duration_error=0.0, sentences=2)
    rng = np.random.default_rng(0)
    power = np.mean(np.concatenate(clean) ** 2)
    noisy = [c + rng.normal(0, np.sqrt(power / 100), c.shape).astype(np.float32) for c in clean]  # 20 dB
    got = compare(clean, noisy, RATE)
    assert got.snr_db == pytest.approx(20.0, abs=0.3) and got.duration_error == 0.0
    assert got.mel_distance_db > 0.5  # noise fills the quiet bands between the harmonics
    louder = compare(clean, [c + rng.normal(0, np.sqrt(power), c.shape).astype(np.float32) for c in clean], RATE)
    assert louder.snr_db == pytest.approx(0.0, abs=0.3) and louder.mel_distance_db > got.mel_distance_db


def test_lengths_that_differ_are_counted_and_compared_over_the_shorter() -> None:
    clean = [_speechlike(2.0)]
    longer = [np.concatenate([clean[0], np.zeros(256, dtype=np.float32)])]
    got = compare(clean, longer, RATE)
    assert got.duration_error == pytest.approx(256 / len(clean[0]), abs=1e-5)
    assert DEFAULT_BAR.problem(got) is None  # one frame (256 samples) in two seconds: within 1 %
    shifted = compare(clean, [np.concatenate([np.zeros(64, dtype=np.float32), clean[0]])], RATE)
    assert shifted.snr_db < 10, "a shift of 64 samples is a different waveform"
    with pytest.raises(ValueError, match="same sentences"):
        compare(clean, [], RATE)


def test_the_bar_names_every_miss() -> None:
    bar = FidelityBar(max_mel_distance_db=1.0, min_snr_db=20.0, max_duration_error=0.01)
    assert bar.problem(Fidelity(0.5, 25.0, 0.0, 4)) is None
    assert bar.problem(Fidelity(2.0, 12.0, 0.02, 4)) == "mel 2.00 dB > 1, SNR 12.0 dB < 20, lengths off by 2.0% > 1.0%"


@pytest.fixture
def voice(tiny_vits_dir: Path) -> LoadedVoice:
    return load_folder_voice(tiny_vits_dir, name="tiny")


@pytest.fixture
def cpu() -> DeviceInfo:
    return detect_device("cpu")


def _degrade_under_autocast(voice: LoadedVoice, module: str, scale: float = 1.0) -> None:
    """`module`'s output plus noise `scale` times its RMS whenever it runs under autocast (not as an fp32
    island): a module that is ruined by low precision, and fine in fp32."""
    import torch

    target = getattr(voice.model, module)
    original: Callable[..., Any] = target.forward
    generator = torch.Generator().manual_seed(0)

    def forward(*args: Any, **kwargs: Any) -> Any:
        out = original(*args, **kwargs)
        if not torch.is_autocast_enabled("cpu"):
            return out
        tensor = out if isinstance(out, torch.Tensor) else out[0]
        noise = torch.randn(tensor.shape, generator=generator) * tensor.float().pow(2).mean().sqrt() * scale
        noisy = tensor + noise.to(tensor.dtype)
        return noisy if isinstance(out, torch.Tensor) else (noisy, *out[1:])

    target.forward = forward


def test_a_policy_that_meets_the_bar_is_kept_with_its_measured_fidelity(voice: LoadedVoice, cpu: DeviceInfo) -> None:
    engine = start_engine(voice, cpu, CPU_BF16)
    assert engine.policy == CPU_BF16 and engine.notes == []
    assert engine.fidelity is not None and DEFAULT_BAR.problem(engine.fidelity) is None
    assert engine.fidelity.sentences == 4 and engine.fidelity.snr_db < SNR_CEILING_DB  # bf16 did change something
    plain = start_engine(load_folder_voice(voice.folder), cpu, choose_policy(cpu))  # type: ignore[arg-type]
    assert plain.fidelity is None  # fp32 is the reference itself


def test_a_decoder_below_the_bar_is_kept_in_fp32_and_said_in_one_line(voice: LoadedVoice, cpu: DeviceInfo) -> None:
    _degrade_under_autocast(voice, "decoder")
    engine = start_engine(voice, cpu, CPU_BF16)
    assert engine.policy.dtype == "bfloat16" and engine.policy.keep_fp32 == (*VITS_FP32_MODULES, "decoder")
    assert "decoder kept in fp32 for fidelity" in engine.policy.reason
    [note] = engine.notes
    assert note.startswith("fidelity under bfloat16 below the bar (") and "; decoder kept in fp32: mel " in note
    assert "\n" not in note
    assert engine.fidelity is not None and DEFAULT_BAR.problem(engine.fidelity) is None
    got: list[Any] = []
    engine.synthesize([], got.append)  # still a working engine
    from worker.engine import ChunkInput

    engine.synthesize([ChunkInput(0, "The flow still runs in bf16.", 1)], got.append)
    assert got[0].dtype == "bfloat16" and not got[0].fp32_redo


def test_the_flow_is_next_then_fp32(voice: LoadedVoice, cpu: DeviceInfo, tiny_vits_dir: Path) -> None:
    _degrade_under_autocast(voice, "decoder")
    _degrade_under_autocast(voice, "flow")
    engine = start_engine(voice, cpu, CPU_BF16)
    assert engine.policy.keep_fp32 == (*VITS_FP32_MODULES, "decoder", "flow") and len(engine.notes) == 1
    assert "decoder, flow kept in fp32" in engine.notes[0]
    everything = load_folder_voice(tiny_vits_dir, name="tiny")
    original = everything.model.forward

    def forward(*args: Any, **kwargs: Any) -> Any:  # outside every module: only fp32 escapes it
        import torch

        out = original(*args, **kwargs)
        if torch.is_autocast_enabled("cpu"):
            out.waveform[:] = out.waveform.flip(-1)
        return out

    everything.model.forward = forward
    fallen = start_engine(everything, cpu, CPU_BF16)
    assert fallen.policy.dtype == "float32" and fallen.policy.keep_fp32 == () and fallen.fidelity is None
    assert "falling back to float32" in fallen.notes[-1]


def test_no_check_when_asked(voice: LoadedVoice, cpu: DeviceInfo) -> None:
    _degrade_under_autocast(voice, "decoder")
    engine = start_engine(voice, cpu, CPU_BF16, fidelity_bar=None)
    assert engine.policy == CPU_BF16 and engine.fidelity is None


@pytest.mark.slow
@pytest.mark.timeout(1800)  # bf16 emulated on a CPU: ~9 sentences at several seconds each, minutes under load
def test_the_settled_policy_keeps_the_words_within_0_03_of_fp32(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The default voice under bf16 (CPU autocast, what a card computes) after the start-up check: what it
    settles on meets the bar, and the reference paragraph is heard as well as in fp32 (WER within 0.03)."""
    import re

    from worker.asr import REFERENCE_PARAGRAPH, transcribe, wer
    from worker.engine import ChunkInput
    from worker.voices import load_voice

    cache = tmp_path_factory.getbasetemp() / "voices-cache"
    cpu = detect_device("cpu")
    sentences = [s.strip() for s in re.findall(r"[^.]+\.", REFERENCE_PARAGRAPH)]
    heard = {}
    for name, policy in (("fp32", choose_policy(cpu, runtime="torch")), ("bf16", CPU_BF16)):
        engine = start_engine(load_voice("piper:joe", cache), cpu, policy, deterministic=True, max_batch_items=1)
        if name == "bf16":
            assert engine.policy.dtype == "bfloat16" and engine.fidelity is not None
            assert DEFAULT_BAR.problem(engine.fidelity) is None, engine.notes
        pieces: dict[int, np.ndarray] = {}
        engine.synthesize([ChunkInput(i, s, i) for i, s in enumerate(sentences)],
                          lambda audio, pieces=pieces: pieces.__setitem__(audio.idx, audio.samples))
        pause = np.zeros(int(0.3 * engine.sample_rate_hz), dtype=np.float32)
        audio = np.concatenate([part for i in sorted(pieces) for part in (pieces[i], pause)])
        heard[name] = wer(REFERENCE_PARAGRAPH, transcribe(audio, engine.sample_rate_hz))
    assert heard["bf16"] <= heard["fp32"] + 0.03, heard
