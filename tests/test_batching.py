"""Length-sorted, budget-bounded batches, and batched VITS output equal to item-by-item output."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.batching import (
    MAX_TOKEN_BUDGET,
    MIN_TOKEN_BUDGET,
    Item,
    budget_from_memory,
    lowered_budget,
    padded_tokens,
    plan_batches,
)

TEXTS = [
    "hello there.",
    "a much longer sentence that goes on and on for quite a while, with a comma.",
    "ok",
    "a medium length one here.",
    "and another sentence of some length!",
]
# The HiFi-GAN decoder's receptive field reaches this far into a neighbour's padding (measured ~362
# samples with the tiny random model; ~1e-4 differences with a real voice). Only there may a batched item
# differ from the same item synthesized alone.
DECODER_REACH_SAMPLES = 512


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=900), max_size=40), st.integers(min_value=1, max_value=3000),
       st.one_of(st.none(), st.integers(min_value=1, max_value=8)))
def test_plan_batches_properties(lengths: list[int], budget: int, max_items: int | None) -> None:
    items = [Item(key, n) for key, n in enumerate(lengths)]
    batches = plan_batches(items, budget, max_items)
    flat = [item for batch in batches for item in batch]
    assert sorted(item.key for item in flat) == list(range(len(items)))  # each item exactly once
    assert [item.n_tokens for item in flat] == sorted(lengths, reverse=True)  # longest first
    for batch in batches:
        assert batch
        assert len(batch) == 1 or padded_tokens(batch) <= budget
        assert max_items is None or len(batch) <= max_items


def test_plan_batches_packs_similar_lengths() -> None:
    items = [Item(0, 10), Item(1, 500), Item(2, 12), Item(3, 480), Item(4, 2000)]
    batches = plan_batches(items, 1000)
    assert [[i.key for i in b] for b in batches] == [[4], [1, 3], [2, 0]]  # 2 * 500 <= 1000
    assert [[i.key for i in b] for b in plan_batches(items, 100_000, max_items=2)] == [[4, 1], [3, 2], [0]]
    assert plan_batches([], 10) == []
    with pytest.raises(ValueError, match="token_budget"):
        plan_batches(items, 0)


def test_lowered_budget_and_budget_from_memory() -> None:
    batch = [Item(0, 40), Item(1, 30), Item(2, 30), Item(3, 10)]  # 160 padded tokens
    assert lowered_budget(batch, 1000) == 80
    assert len(plan_batches(batch, lowered_budget(batch, 1000))[0]) == 2
    assert lowered_budget(batch[:2], 1000) == 40  # never below the longest item
    assert lowered_budget(batch, 50) == 50  # never above the budget it lowers
    assert lowered_budget([Item(0, 7), Item(1, 7), Item(2, 7)], 100) == 10
    assert budget_from_memory(8 << 30, 100_000) == int((8 << 30) * 0.5 / 100_000)
    assert budget_from_memory(0, 1000) == MIN_TOKEN_BUDGET
    assert budget_from_memory(80 << 30, 1) == MAX_TOKEN_BUDGET


def _runner(tiny_vits_dir: Path):  # type: ignore[no-untyped-def]
    from worker.device import detect_device
    from worker.loaded_voice import load_folder_voice
    from worker.model import ModelRunner
    from worker.precision import choose_policy

    voice = load_folder_voice(tiny_vits_dir)
    device = detect_device("cpu")
    return voice, ModelRunner(voice.model, device, choose_policy(device), noise_off=True)


def test_batched_equals_item_by_item_after_trimming(tiny_vits_dir: Path) -> None:
    voice, runner = _runner(tiny_vits_dir)
    ids = [voice.encode(text).ids for text in TEXTS]
    batched = runner.run(ids)
    longest = max(len(wave) for wave in batched)
    for item_ids, wave in zip(ids, batched, strict=True):
        alone = runner.run([item_ids])[0]
        assert wave.dtype == np.float32 and wave.ndim == 1
        assert len(wave) == len(alone)  # cut to its own length: no neighbour's padding
        body = len(alone) - DECODER_REACH_SAMPLES if len(wave) < longest else len(alone)
        np.testing.assert_allclose(wave[:body], alone[:body], atol=1e-4)
        assert np.isfinite(wave).all() and np.abs(wave).max() > 0.01


def test_padded_tail_is_not_silent(tiny_vits_dir: Path) -> None:
    """Why trimming matters: the part of the padded batch past an item's length is noise, not silence."""
    import torch

    voice, runner = _runner(tiny_vits_dir)
    ids = [voice.encode(text).ids for text in TEXTS[:2]]
    input_ids, attention_mask = runner._tensors(ids)
    with torch.inference_mode():
        out = voice.model(input_ids=input_ids, attention_mask=attention_mask)
    short = int(out.sequence_lengths[0])
    assert short < out.waveform.shape[1]
    assert float(out.waveform[0, short:].abs().max()) > 0.05
    assert [len(w) for w in runner.run(ids)] == [int(n) for n in out.sequence_lengths]


def test_runner_pads_with_the_models_pad_id(tiny_vits_dir: Path) -> None:
    _voice, runner = _runner(tiny_vits_dir)
    input_ids, attention_mask = runner._tensors([[5, 6, 7], [8]])
    assert input_ids.tolist() == [[5, 6, 7], [8, runner.pad_id, runner.pad_id]]
    assert attention_mask.tolist() == [[1, 1, 1], [1, 0, 0]]
