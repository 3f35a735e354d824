"""SSML `<voice name>` and `<prosody rate>` on part of a document: their text becomes chunks of their own,
said in that voice or at that rate (times the job's speed); unknown voices and other sample rates are
refused at submit; a re-render keeps a chunk's audio only when its text, voice and rate are unchanged."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from sqlalchemy import select

from producer.jobs import job_views
from producer.rerender import rerender
from producer.submit import submit
from schemas.db import Store, open_store
from schemas.errors import InvalidInput, UnknownVoice
from schemas.messages import JobRequest
from schemas.settings import ProducerSettings, WorkerSettings
from schemas.status import BreakKind, JobStatus
from schemas.tables import Chunk, Job
from tests.conftest import TEST_VOICE_DIRS
from worker.device import detect_device
from worker.engine import Engine, start_engine
from worker.job import JobContext, synthesize_job
from worker.loaded_voice import load_folder_voice
from worker.precision import choose_policy
from worker.testing import build_tiny_vits

# The tiny random model says about one frame per character, which speeding up cannot shorten (frame
# counts are rounded up): on it, rates are checked slowing down (test_pronunciation does the same).
SENTENCE = "the quick brown fox jumps over the lazy dog, again and again and again."


@pytest.fixture(scope="module")
def other_voice(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_vits(Path(TEST_VOICE_DIRS) / tmp_path_factory.mktemp("other-voice").name, seed=3)


@pytest.fixture(scope="module")
def engine(tiny_vits_dir: Path) -> Engine:
    cpu = detect_device("cpu")
    return start_engine(load_folder_voice(tiny_vits_dir), cpu, choose_policy(cpu), deterministic=True)


@pytest.fixture
def store(sqlite_url: str) -> Store:
    return open_store(sqlite_url)


def _producer(store: Store, tmp_path: Path) -> ProducerSettings:
    return ProducerSettings(database_url=str(store.engine.url), output_dir=tmp_path / "out",
                            voice_dirs=TEST_VOICE_DIRS)


def _rows(store: Store, job_id: str) -> list[tuple[str, BreakKind, str | None, float | None]]:
    with store.read() as s:
        return [(c.text, c.break_after, c.voice, c.speed)
                for c in s.scalars(select(Chunk).where(Chunk.job_id == job_id).order_by(Chunk.idx))]


def _samples(store: Store, job_id: str) -> list[int]:
    with store.read() as s:
        return [int(c.samples or 0) for c in s.scalars(select(Chunk).where(Chunk.job_id == job_id).order_by(Chunk.idx))]


def _run(store: Store, job_id: str, tmp_path: Path, engines: dict[str, Engine]) -> list[str]:
    """Synthesize `job_id` in this process; returns the voices the worker asked engines for."""
    asked: list[str] = []

    def engine_for(voice: str) -> Engine:
        asked.append(voice)
        return engines.get(voice, engines["job"])

    ctx = JobContext(store=store, settings=WorkerSettings(database_url=str(store.engine.url),
                                                          output_dir=tmp_path / "out"),
                     worker_id="host/cpu/1", engine_for=engine_for)
    assert synthesize_job(job_id, ctx).status == JobStatus.SUCCEEDED
    return asked


def test_a_voice_span_is_said_by_its_voice_and_the_rest_by_the_jobs(store: Store, tmp_path: Path, engine: Engine,
                                                                    tiny_vits_dir: Path, other_voice: Path) -> None:
    text = (f'<speak><p>Hello there, <voice name="{other_voice}">how are you</voice> today?</p>'
            f'<p><voice name="{other_voice}">Fine.</voice></p></speak>')
    [job] = submit([JobRequest(text=text, voice=str(tiny_vits_dir))], _producer(store, tmp_path), store,
                   publisher=None)
    other = str(other_voice.resolve())
    # Chunks end at each voice change (no pause inside the sentence), the paragraph's pause stays.
    assert _rows(store, job.id) == [("Hello there,", BreakKind.NONE, None, None),
                                    ("how are you", BreakKind.NONE, other, None),
                                    ("today?", BreakKind.PARAGRAPH, None, None),
                                    ("Fine.", BreakKind.SENTENCE, other, None)]
    other_engine = start_engine(load_folder_voice(other_voice), engine.device, engine.policy, deterministic=True)
    asked = _run(store, job.id, tmp_path, {"job": engine, other: other_engine})
    assert set(asked) >= {str(tiny_vits_dir.resolve()), other}


def test_nested_and_adjacent_spans_each_get_their_voice_and_rate(store: Store, tmp_path: Path,
                                                                 tiny_vits_dir: Path, other_voice: Path) -> None:
    text = (f'<speak>One. <voice name="{other_voice}">Two. <prosody rate="50%">Three.</prosody></voice>'
            '<prosody rate="200%">Four.</prosody><prosody rate="x-slow">Five.</prosody> Six.</speak>')
    [job] = submit([JobRequest(text=text, voice=str(tiny_vits_dir))], _producer(store, tmp_path), store,
                   publisher=None)
    other = str(other_voice.resolve())
    assert [(t, v, s) for t, _, v, s in _rows(store, job.id)] == [
        ("One.", None, None), ("Two.", other, None), ("Three.", other, 0.5), ("Four.", None, 2.0),
        ("Five.", None, 0.5), ("Six.", None, None)]


def test_a_span_in_the_jobs_own_voice_or_covering_everything_is_no_chunk_voice(store: Store, tmp_path: Path,
                                                                                tiny_vits_dir: Path) -> None:
    producer = _producer(store, tmp_path)
    own, whole = submit([JobRequest(text=f'<speak>One. <voice name="{tiny_vits_dir}">Two.</voice></speak>',
                                    voice=str(tiny_vits_dir)),
                         JobRequest(text='<speak><prosody rate="50%">One. Two.</prosody></speak>',
                                    voice=str(tiny_vits_dir))], producer, store, publisher=None)
    assert [(v, s) for _, _, v, s in _rows(store, own.id)] == [(None, None), (None, None)]
    assert [(v, s) for _, _, v, s in _rows(store, whole.id)] == [(None, None), (None, None)]
    with store.read() as s:
        assert s.get_one(Job, whole.id).options == {"speed": 0.5}  # the job's speed, as before


@pytest.mark.parametrize(("voice", "error", "message"), [
    ("piper:nobody", UnknownVoice, r'^doc\.ssml: SSML <voice name="piper:nobody">: unknown voice'),
    ("piper:joe", InvalidInput, r"^doc\.ssml: SSML <voice name=\"piper:joe\"> speaks at 22050 Hz and the job's "
                                r"voice at 16000 Hz"),
])
def test_a_span_voice_that_cannot_be_used_is_a_one_line_error(store: Store, tmp_path: Path, tiny_vits_dir: Path,
                                                              voice: str, error: type[Exception],
                                                              message: str) -> None:
    text = f'<speak>Hello <voice name="{voice}">there</voice>.</speak>'
    with pytest.raises(error, match=message) as caught:
        submit([JobRequest(text=text, voice=str(tiny_vits_dir), source="doc.ssml")], _producer(store, tmp_path),
               store, publisher=None)
    assert "\n" not in str(caught.value)
    with store.read() as s:
        assert s.scalar(select(Chunk.idx).limit(1)) is None  # nothing stored


def test_a_rate_span_is_said_at_its_rate_times_the_jobs_speed(store: Store, tmp_path: Path, engine: Engine,
                                                              tiny_vits_dir: Path) -> None:
    text = f'<speak>{SENTENCE} <prosody rate="50%">{SENTENCE}</prosody> {SENTENCE}</speak>'
    producer = _producer(store, tmp_path)
    [plain] = submit([JobRequest(text=text, voice=str(tiny_vits_dir))], producer, store, publisher=None)
    [slow] = submit([JobRequest(text=text, voice=str(tiny_vits_dir), speed=0.5)], producer, store, publisher=None)
    assert [s for *_, s in _rows(store, plain.id)] == [None, 0.5, None]
    _run(store, plain.id, tmp_path, {"job": engine})  # short jobs of one voice: the other runs with it
    assert job_views(store, [slow.id])[0].status == JobStatus.SUCCEEDED  # (worker.together's inputs)
    normal, half, again = _samples(store, plain.id)
    assert normal == again and half / normal == pytest.approx(2.0, abs=0.1)
    job_half, quarter, _ = _samples(store, slow.id)  # job speed 0.5, the span 0.5 x 0.5
    assert job_half / normal == pytest.approx(2.0, abs=0.1) and quarter / normal == pytest.approx(4.0, abs=0.2)


@pytest.mark.slow
def test_a_200_percent_span_halves_a_real_voices_audio(store: Store, tmp_path: Path) -> None:
    from worker.device import parse_simulated
    from worker.voices import load_voice

    cpu = parse_simulated("cpu::8")
    joe = start_engine(load_voice("piper:joe", tmp_path, onnx=True), cpu, choose_policy(cpu, runtime="onnxruntime"),
                       deterministic=True)
    sentence = "Say this sentence slowly and clearly, please."
    text = f'<speak>{sentence} <prosody rate="200%">{sentence}</prosody></speak>'
    [job] = submit([JobRequest(text=text, voice="piper:joe")], _producer(store, tmp_path), store, publisher=None)
    _run(store, job.id, tmp_path, {"job": joe})
    normal, fast = _samples(store, job.id)
    # Each phoneme's frame count is rounded up after scaling, so short phonemes keep a frame: about 0.6.
    assert normal > 20_000 and 0.45 < fast / normal < 0.7


def test_rerender_keeps_a_chunk_only_when_its_text_voice_and_rate_stay(store: Store, tmp_path: Path, engine: Engine,
                                                                      tiny_vits_dir: Path) -> None:
    # A long job (more than four chunks) keeps its chunk audio; a short one keeps none and is redone whole.
    text = f'<speak>{SENTENCE} <prosody rate="50%">Second one.</prosody> Third one. Fourth one. Fifth one.</speak>'
    producer = _producer(store, tmp_path)
    [job] = submit([JobRequest(text=text, voice=str(tiny_vits_dir))], producer, store, publisher=None)
    _run(store, job.id, tmp_path, {"job": engine})
    done = rerender(store, job.id, producer, text=re.sub(r'rate="50%"', 'rate="25%"', text))
    assert done.queued and done.chunks_redone == 1  # the same words at another rate: said again
    assert [s for *_, s in _rows(store, job.id)] == [None, 0.25, None, None, None]
    with store.read() as s:
        assert [c.audio_path is None for c in s.scalars(select(Chunk).where(Chunk.job_id == job.id)
                                                        .order_by(Chunk.idx))] == [False, True, False, False, False]
