"""Kokoro-82M in PyTorch, length-batched: on a small randomly initialized Kokoro built here (`kokoro_models`),
each item of a padded batch gets the audio it gets alone, and alone it gets what the `kokoro` package's own
`KModel` gives for the same seed. Tolerances: float32 kernels run on other shapes in a batch, so sums
differ in their last bits (measured max |diff| ~2e-5 on waves peaking near 1-2); 1e-3 leaves room for
other CPUs and is still 100x below the difference one wrong frame or one padding leak makes (>1e-1)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from schemas.kokoro import KOKORO_JA
from tests.kokoro_models import build_tiny_kokoro
from worker.kokoro_batch import batched_forward
from worker.kokoro_torch import KokoroWeights, find_kokoro_weights, load_kokoro_model, noise_seed
from worker.kokoro_voice import PIECE_BREAK, KokoroVoice, load_kokoro_voice

TOLERANCE = 1e-3
ITEMS = [[43, 56, 57, 16, 44, 61], [50, 51], [61, 62, 63, 64, 65, 66, 67, 68, 69]]


@pytest.fixture(scope="module")
def voice(tmp_path_factory: pytest.TempPathFactory) -> KokoroVoice:
    return load_kokoro_voice("kokoro:jf_alpha", tmp_path_factory.getbasetemp() / "voices-cache")


@pytest.fixture(scope="module")
def voice_dir(tmp_path_factory: pytest.TempPathFactory, voice: KokoroVoice) -> Path:
    """A voice directory holding a tiny random Kokoro as `Kokoro-82M/` (where ttsfleet looks for weights)."""
    root = tmp_path_factory.mktemp("kokoro-voices")
    build_tiny_kokoro(root / "Kokoro-82M", voice.vocab)
    return root


@pytest.fixture(scope="module")
def model(voice_dir: Path) -> Any:
    weights = find_kokoro_weights([voice_dir])
    assert weights is not None and weights.model.name == "kokoro-tiny.pth"
    return load_kokoro_model(weights)


def _styles(voice: KokoroVoice, items: list[list[int]]) -> torch.Tensor:
    return torch.from_numpy(np.concatenate([voice.style_for(len(item)) for item in items]))


def _assert_close(got: torch.Tensor, want: torch.Tensor) -> None:
    assert got.shape == want.shape  # the same durations, frame for frame
    assert float((got - want).abs().max()) <= TOLERANCE
    assert float(want.abs().max()) > 0.1  # a real signal, not two silences compared


@pytest.mark.slow
def test_one_item_is_what_kmodel_gives_for_the_same_seed(model: Any, voice: KokoroVoice) -> None:
    item = ITEMS[0]
    styles = _styles(voice, [item])
    with torch.inference_mode():
        torch.manual_seed(1234)
        reference, _ = model.forward_with_tokens(torch.tensor([[0, *item, 0]]), styles, 1.0)
        [ours] = batched_forward(model, [item], styles, 1.0, seeds=[1234])
    _assert_close(ours, reference)


@pytest.mark.slow
@pytest.mark.parametrize("seeded", [True, False], ids=["noise-per-item", "noise-off"])
def test_a_padded_batch_gives_each_item_its_audio_alone(model: Any, voice: KokoroVoice, seeded: bool) -> None:
    seeds = [11, 12, 13] if seeded else None
    styles = _styles(voice, ITEMS)
    with torch.inference_mode():
        batch = batched_forward(model, ITEMS, styles, 1.0, seeds=seeds)
        alone = [batched_forward(model, [item], styles[i: i + 1], 1.0, seeds=seeds[i: i + 1] if seeds else None)[0]
                 for i, item in enumerate(ITEMS)]
        order = [2, 0, 1]  # batch mates and positions change nothing either
        shuffled = batched_forward(model, [ITEMS[i] for i in order], styles[order], 1.0,
                                   seeds=[seeds[i] for i in order] if seeds else None)
    for i in range(len(ITEMS)):
        _assert_close(batch[i], alone[i])
    for pos, i in enumerate(order):
        _assert_close(shuffled[pos], alone[i])
    assert len({w.shape[0] for w in batch}) == len(ITEMS)  # really different lengths: padding was there


@pytest.mark.slow
def test_a_padding_leak_would_be_caught(model: Any, voice: KokoroVoice, monkeypatch: pytest.MonkeyPatch) -> None:
    """The check above can fail: with AdaIN's statistics taken over the padding too (a batch as `KModel`'s
    modules would run it), the short items of a batch no longer sound as they do alone."""
    from worker import kokoro_batch

    def unmasked(norm: Any, x: torch.Tensor, s: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return norm(x, s)

    styles = _styles(voice, ITEMS)
    with torch.inference_mode():
        monkeypatch.setattr(kokoro_batch, "masked_adain", unmasked)
        batch = batched_forward(model, ITEMS, styles, 1.0, seeds=[1, 2, 3])
        alone = batched_forward(model, ITEMS[1:2], styles[1:2], 1.0, seeds=[2])[0]
    assert batch[1].shape == alone.shape
    assert float((batch[1] - alone).abs().max()) > 100 * TOLERANCE


@pytest.mark.slow
def test_the_engine_batches_kokoro_on_torch_and_matches_one_at_a_time(voice_dir: Path, tmp_path: Path) -> None:
    from worker.device import detect_device
    from worker.engine import ChunkInput, start_engine
    from worker.kokoro_torch import KokoroTorchRunner
    from worker.precision import choose_policy
    from worker.voices import load_voice

    loaded = load_voice("kokoro:jf_alpha", tmp_path / "cache", [voice_dir], onnx=False)
    assert loaded.model is not None and loaded.kokoro is not None
    device = detect_device("cpu")
    engine = start_engine(loaded, device, choose_policy(device, "fp32", "torch"), token_budget=4096)
    assert isinstance(engine.runner, KokoroTorchRunner)
    texts = ["猫である。名前は無い。", "ニャー。", "見当がつかぬ。"]
    got: dict[int, np.ndarray] = {}
    run = engine.synthesize([ChunkInput(i, text, seed=i) for i, text in enumerate(texts)],
                            lambda c: got.__setitem__(c.idx, c.samples))
    assert run.batches == 1 and run.max_batch_size == 3
    assert PIECE_BREAK in loaded.encode(texts[0]).ids  # two sentences: two pieces, joined by a pause
    for idx, text in enumerate(texts):
        [alone] = engine.runner.run([loaded.encode(text).ids])
        assert got[idx].shape == alone.shape
        assert float(np.abs(got[idx] - alone).max()) <= TOLERANCE


def test_noise_seeds_depend_on_the_piece_alone() -> None:
    assert noise_seed([1, 2, 3]) == noise_seed([1, 2, 3]) != noise_seed([1, 2, 4])


def test_weights_are_found_in_a_voice_directory_or_the_hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 voice_dir: Path) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    assert find_kokoro_weights([tmp_path]) is None
    folder = voice_dir / "Kokoro-82M"
    assert find_kokoro_weights([tmp_path, voice_dir]) == KokoroWeights(folder / "config.json",
                                                                        folder / "kokoro-tiny.pth")
    snapshot = tmp_path / "hub" / "models--hexgrad--Kokoro-82M" / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text(json.dumps({"vocab": {}}), encoding="utf-8")
    (snapshot / "kokoro-v1_0.pth").write_bytes(b"")
    (tmp_path / "hub" / "models--hexgrad--Kokoro-82M" / "refs").mkdir()
    (tmp_path / "hub" / "models--hexgrad--Kokoro-82M" / "refs" / "main").write_text("a" * 40)
    found = find_kokoro_weights([tmp_path])
    assert found is not None and found.model.name == "kokoro-v1_0.pth"


def test_without_torch_weights_a_kokoro_voice_runs_its_onnx_model(tmp_path: Path) -> None:
    from worker.device import parse_simulated
    from worker.kokoro_onnx import KokoroOnnxRunner
    from worker.precision import choose_policy
    from worker.runners import make_kokoro_runner
    from worker.voices import load_voice

    loaded = load_voice("kokoro:jf_alpha", tmp_path, [tmp_path], onnx=False)  # no weights anywhere here
    assert loaded.model is None
    device = parse_simulated("NVIDIA L4:8.9:24")  # a GPU worker: its policy says bf16 on torch
    runner = make_kokoro_runner(loaded, device, choose_policy(device, "auto"))
    assert isinstance(runner, KokoroOnnxRunner)
    assert runner.policy.dtype == "float32" and "int8 ONNX model on the CPU" in runner.policy.reason
    assert KOKORO_JA.model_sha256[:12] in str(runner.voice.model_path)


class _Seen(Exception):
    """Raised from inside a stage once it has recorded whether autocast was on there."""


@pytest.mark.parametrize(("keep_fp32", "bert_autocast", "decoder_autocast"), [
    ((), True, True),
    (("text_encoder", "duration_predictor"), False, True),  # a VITS policy's islands: their Kokoro stages
    (("text_encoder", "duration_predictor", "decoder"), False, False),  # the fidelity check's mixed policy
])
def test_a_policys_fp32_modules_run_their_kokoro_stages_without_autocast(
        model: Any, voice: KokoroVoice, monkeypatch: pytest.MonkeyPatch, keep_fp32: tuple[str, ...],
        bert_autocast: bool, decoder_autocast: bool) -> None:
    from worker.kokoro_torch import fp32_stages

    seen: dict[str, bool] = {}

    def record(name: str, forward: Any, stop: bool) -> Any:
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            seen[name] = torch.is_autocast_enabled("cpu")
            if stop:
                raise _Seen
            return forward(*args, **kwargs)
        return wrapped

    monkeypatch.setattr(model.bert_encoder, "forward", record("bert", model.bert_encoder.forward, False))
    monkeypatch.setattr(model.decoder.F0_conv, "forward", record("decoder", model.decoder.F0_conv.forward, True))
    stages = fp32_stages(keep_fp32)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16), pytest.raises(_Seen):
        # The prosody stages hold LSTMs, which this CPU's oneDNN cannot run in bf16: kept in fp32 here.
        batched_forward(model, ITEMS[1:2], _styles(voice, ITEMS[1:2]), 1.0, None, [*stages, "predictor", "prosody"])
    assert seen == {"bert": bert_autocast, "decoder": decoder_autocast}
