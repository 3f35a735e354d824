"""Lanes as one stream (worker.onnx_runner.OnnxRunner.stream, Engine._run_lanes): every item of a call
queued at once, each lane taking the next as soon as it is free, results handed over as they finish."""

from __future__ import annotations

import numpy as np
import pytest

from worker.device import parse_simulated
from worker.engine import ChunkAudio, ChunkInput, start_engine
from worker.onnx_runner import LaneItem, OnnxRunner
from worker.precision import choose_policy

CPU = parse_simulated("cpu::8")
TEXTS = ["Yes.", "The quick brown fox jumps over the lazy dog.", "The gate is shut today.",
         "In the spring the water rose, and the children came down to watch the ice break up.", "No."]


@pytest.fixture(scope="module")
def joe(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    from worker.voices import load_voice

    return load_voice("piper:joe", tmp_path_factory.mktemp("voices"), onnx=True)


@pytest.mark.slow
def test_stream_yields_every_item_once_with_its_own_audio_and_an_error_in_place(joe) -> None:  # type: ignore[no-untyped-def]
    assert joe.onnx is not None
    policy = choose_policy(CPU, runtime="onnxruntime")
    runner = OnnxRunner(joe.onnx, CPU, policy, noise_off=True, threads=2)
    alone = OnnxRunner(joe.onnx, CPU, policy, noise_off=True, threads=1)
    ids = [list(joe.encode(text).ids) for text in TEXTS]
    items = [LaneItem(item) for item in ids] + [LaneItem(ids[1], speed=2.0), LaneItem([10**9])]
    got: dict[int, np.ndarray | Exception] = {}
    for pos, wave, lane_s in runner.stream(items):
        assert pos not in got and lane_s > 0
        got[pos] = wave
    assert sorted(got) == list(range(len(items)))
    assert isinstance(got[len(items) - 1], Exception)  # a token id outside the vocabulary: its error, in place
    for pos, reference in enumerate(alone.run(ids)):
        wave = got[pos]
        assert isinstance(wave, np.ndarray) and len(wave) == len(reference)
        assert float(np.abs(wave - reference).max()) < 1e-4
    fast = got[len(TEXTS)]
    assert isinstance(fast, np.ndarray) and 0.45 < len(fast) / len(alone.run([ids[1]])[0]) < 0.7


@pytest.mark.slow
def test_closing_a_stream_early_leaves_the_runner_usable(joe) -> None:  # type: ignore[no-untyped-def]
    assert joe.onnx is not None
    runner = OnnxRunner(joe.onnx, CPU, choose_policy(CPU, runtime="onnxruntime"), noise_off=True, threads=2)
    ids = [list(joe.encode(text).ids) for text in TEXTS]
    stream = runner.stream([LaneItem(item) for item in ids * 4])
    next(stream)
    stream.close()  # drops what has not started, waits for what runs
    assert [len(w) for w in runner.run(ids[:2])] == [len(w) for w in runner.run(ids[:2])]
    with pytest.raises(ValueError, match="lanes"):
        next(OnnxRunner(joe.onnx, CPU, runner.policy, threads=1).stream([LaneItem(ids[0])]))


@pytest.mark.slow
def test_the_engine_streams_a_call_over_its_lanes_each_chunk_at_its_own_speed(joe) -> None:  # type: ignore[no-untyped-def]
    engine = start_engine(joe, CPU, choose_policy(CPU, runtime="onnxruntime"), deterministic=True, threads=2)
    chunks = [ChunkInput(i, text, i) for i, text in enumerate(TEXTS)]
    chunks.append(ChunkInput(len(TEXTS), TEXTS[3], 0, speed=2.0))
    seen: list[ChunkAudio] = []
    run = engine.synthesize(chunks, seen.append)
    by_idx = {audio.idx: audio for audio in seen}
    assert sorted(by_idx) == list(range(len(chunks))) and len(seen) == len(chunks)
    assert (run.max_batch_size, run.batches) == (2, len(chunks))
    assert all(audio.batch_size == 2 and audio.synth_s > 0 for audio in seen)
    # Each chunk's time is its share of the wall time (lane time / lanes), so the stats' "x real time"
    # is the worker's: the shares add up to about the call's wall time, not twice it.
    assert 0.5 * run.synth_s < sum(audio.synth_s for audio in seen) <= 1.05 * run.synth_s
    # Speeds share a call: the chunk at 2.0 is 0.45-0.7 as long as the same text at 1.0 (0.61 measured).
    assert 0.45 < len(by_idx[len(TEXTS)].samples) / len(by_idx[3].samples) < 0.7
