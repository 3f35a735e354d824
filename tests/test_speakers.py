"""Voices per role: a multi-speaker voice's speakers sound different, batches never mix speakers, and
`narrator=A,dialogue=B` sends quoted speech (and only it) to the dialogue voice, losing no character."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from producer.dialogue import dialogue_chunks, parse_voice_roles, split_dialogue
from producer.jobs import job_views
from producer.submit import submit
from schemas.db import Store, open_store
from schemas.errors import InvalidInput, UnknownVoice
from schemas.messages import JobRequest
from schemas.settings import ProducerSettings, WorkerSettings
from schemas.status import BreakKind, JobStatus
from schemas.tables import Chunk
from schemas.voices import resolve_voice_name, voice_speaker
from tests.conftest import TEST_VOICE_DIRS
from worker.device import detect_device
from worker.engine import ChunkAudio, ChunkInput, Engine, start_engine
from worker.job import JobContext, synthesize_job
from worker.loaded_voice import load_folder_voice
from worker.precision import choose_policy
from worker.testing import build_tiny_vits


@pytest.fixture(scope="module")
def two_speakers(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_vits(Path(TEST_VOICE_DIRS) / tmp_path_factory.mktemp("speakers").name, seed=1,
                           speakers=("alice", "bob"))


@pytest.fixture(scope="module")
def engine(two_speakers: Path) -> Engine:
    cpu = detect_device("cpu")
    return start_engine(load_folder_voice(two_speakers), cpu, choose_policy(cpu), deterministic=True)


def _say(engine: Engine, chunks: list[ChunkInput]) -> dict[int, np.ndarray]:
    got: dict[int, ChunkAudio] = {}
    engine.synthesize(chunks, lambda audio: got.__setitem__(audio.idx, audio))
    return {idx: audio.samples for idx, audio in got.items()}


def test_speakers_give_different_audio_and_never_share_a_batch(engine: Engine) -> None:
    text = "the same words from two speakers."
    alone = {speaker: _say(engine, [ChunkInput(0, text, 1, speaker)])[0] for speaker in (0, 1)}
    assert not np.array_equal(alone[0], alone[1])
    mixed = _say(engine, [ChunkInput(i, text, 1, i % 2) for i in range(4)])
    for idx, samples in mixed.items():  # in a batch with its own speaker only: as when said alone
        np.testing.assert_allclose(samples, alone[idx % 2], atol=1e-5)


def test_a_speaker_is_named_by_number_or_name_and_refused_when_unknown(two_speakers: Path,
                                                                       tiny_vits_dir: Path) -> None:
    by_name = resolve_voice_name(f"{two_speakers}#bob")
    assert by_name.name == f"{two_speakers.resolve()}#1" and by_name.speaker_id == 1
    assert resolve_voice_name(f"{two_speakers}#0").speaker_id == 0
    assert voice_speaker(by_name.name) == (str(two_speakers.resolve()), 1)
    with pytest.raises(UnknownVoice, match=r"no speaker 'carol'.*alice \(0\), bob \(1\)"):
        resolve_voice_name(f"{two_speakers}#carol")
    with pytest.raises(UnknownVoice, match="no speaker '2'"):
        resolve_voice_name(f"{two_speakers}#2")
    with pytest.raises(UnknownVoice, match="single speaker"):
        resolve_voice_name(f"{tiny_vits_dir}#0")
    from worker.voices import load_voice

    assert load_voice(by_name.name).folder == two_speakers.resolve()  # the speaker is chosen per batch


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list('ab .,\n"“”„«»\'')), max_size=80))
def test_dialogue_spans_lose_no_character(text: str) -> None:
    spans = split_dialogue(text)
    assert "".join(s.text for s in spans) == text
    assert all(s.text for s in spans)
    assert all(s.text[0] in '"“„«»' for s in spans if s.quoted)


def test_quotes_of_each_kind_are_dialogue() -> None:
    text = 'He said, "one." “Two,” she said. „Drei“, sagte er. «Quatre», dit-il. It’s fine.'
    quoted = [s.text for s in split_dialogue(text) if s.quoted]
    assert quoted == ['"one."', "“Two,”", "„Drei“", "«Quatre»"]
    assert [s.quoted for s in split_dialogue('"open\n\nnext')] == [True, False]  # closed at the paragraph
    chunks, said = dialogue_chunks('He paid $5 and said, "In 1984."\n\nThe end.', "en", "de", 100)
    assert [(c.chunk.text, c.dialogue, c.chunk.break_after) for c in chunks] == [
        ("He paid five dollars and said,", False, BreakKind.NONE),
        ('"In eintausendneunhundertvierundachtzig."', True, BreakKind.PARAGRAPH),
        ("The end.", False, BreakKind.SENTENCE)]
    assert said.text.startswith("He paid five dollars")


def test_voice_roles_parse_or_are_refused() -> None:
    roles = parse_voice_roles("narrator=piper:joe, dialogue=/voices/x#2")
    assert roles is not None and (roles.narrator, roles.dialogue) == ("piper:joe", "/voices/x#2")
    assert parse_voice_roles("piper:joe") is None
    with pytest.raises(InvalidInput, match="name both roles"):
        parse_voice_roles("narrator=piper:joe")


def test_a_job_sends_quoted_speech_to_the_dialogue_voice(engine: Engine, two_speakers: Path,
                                                         sqlite_url: str, tmp_path: Path) -> None:
    producer = ProducerSettings(database_url=sqlite_url, output_dir=tmp_path / "out", voice_dirs=TEST_VOICE_DIRS)
    store: Store = open_store(sqlite_url)
    text = 'The door opened. "Who is there?" asked the guard. Nobody answered.'
    [job] = submit([JobRequest(text=text, voice=f"narrator={two_speakers}#alice,dialogue={two_speakers}#bob")],
                   producer, store, publisher=None)
    with store.session() as s:
        rows = [(c.text, c.voice) for c in s.scalars(select(Chunk).where(Chunk.job_id == job.id).order_by(Chunk.idx))]
    bob = f"{two_speakers.resolve()}#1"
    assert rows == [("The door opened.", None), ('"Who is there?"', bob), ("asked the guard.", None),
                    ("Nobody answered.", None)]
    said: list[tuple[int, int | None]] = []
    voices: list[str] = []

    def engine_for(voice: str) -> Engine:
        voices.append(voice)
        return engine

    original = engine.synthesize

    def recording(chunks, on_chunk):  # type: ignore[no-untyped-def]
        said.extend((c.idx, c.speaker_id) for c in chunks)
        return original(chunks, on_chunk)

    engine.synthesize = recording  # type: ignore[method-assign]
    try:
        ctx = JobContext(store=store, settings=WorkerSettings(database_url=sqlite_url, output_dir=producer.output_dir),
                         worker_id="host/cpu/1", engine_for=engine_for)
        assert synthesize_job(job.id, ctx).status == JobStatus.SUCCEEDED
    finally:
        del engine.synthesize
    assert sorted(said) == [(0, 0), (1, 1), (2, 0), (3, 0)]
    assert set(voices) == {str(two_speakers.resolve())}  # one model loaded for both speakers
    [view] = job_views(store, [job.id])
    assert view.audio_path is not None and Path(view.audio_path).name == "the-door-opened-who-is-there.wav"
    store.dispose()


@pytest.mark.slow
def test_run_speaks_dialogue_with_a_second_speaker_through_the_cli(two_speakers: Path, tmp_path: Path) -> None:
    from tests.test_cli import _env, cli

    (tmp_path / "story.txt").write_text('The door opened. "Who is there?" asked the guard.', encoding="utf-8")
    result = cli("run", "story.txt", "--json", "--voice", f"narrator={two_speakers}#alice,dialogue={two_speakers}#bob",
                 env=_env(tmp_path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    [view] = json.loads(result.stdout)
    assert view["status"] == "succeeded" and view["chunks_total"] == 3
    assert view["voice"] == f"{two_speakers.resolve()}#0" and Path(view["audio_path"]).name == "story.wav"
    store = open_store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    with store.session() as s:
        voices = list(s.scalars(select(Chunk.voice).where(Chunk.job_id == view["id"]).order_by(Chunk.idx)))
    store.dispose()
    assert voices == [None, f"{two_speakers.resolve()}#1", None]


def test_onnx_runtime_feeds_the_speaker_to_piper_sid(tmp_path: Path) -> None:
    """A graph with Piper's inputs whose output is its `sid`: what the runner feeds is what comes out."""
    import onnx
    from onnx import TensorProto, helper

    inputs = [helper.make_tensor_value_info("input", TensorProto.INT64, [1, None]),
              helper.make_tensor_value_info("input_lengths", TensorProto.INT64, [1]),
              helper.make_tensor_value_info("scales", TensorProto.FLOAT, [3]),
              helper.make_tensor_value_info("sid", TensorProto.INT64, [1])]
    graph = helper.make_graph([helper.make_node("Cast", ["sid"], ["output"], to=TensorProto.FLOAT)], "piper-sid",
                              inputs, [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "sid.onnx")
    from worker.device import parse_simulated
    from worker.onnx_runner import OnnxRunner, OnnxVoice

    cpu = parse_simulated("cpu::8")
    runner = OnnxRunner(OnnxVoice(tmp_path / "sid.onnx"), cpu, choose_policy(cpu, runtime="onnxruntime"))
    assert [float(w[0]) for w in runner.run([[1, 2], [3]], speaker_id=3)] == [3.0, 3.0]
    assert float(runner.run([[1]])[0][0]) == 0.0
