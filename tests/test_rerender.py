"""`rerender`: only the chunks whose spoken text changes are synthesized again, and the result is the
audio a fresh job of the new text would get (noise off). Runs the real tiny VITS in-process, as `run` does."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from sqlalchemy import update

from producer.cli import main
from producer.jobs import job_views
from producer.rerender import rerender
from producer.submit import submit
from schemas.db import Store, open_store
from schemas.errors import InvalidInput
from schemas.messages import JobRequest
from schemas.settings import ProducerSettings, WorkerSettings
from schemas.status import JobStatus
from schemas.tables import Job
from tests.conftest import TEST_VOICE_DIRS
from worker.events import Listener
from worker.runtime import WorkerRuntime

# 20 sentences, one chunk each; "lamp" is in exactly three of them (chunks 2, 9 and 15).
SENTENCES = ["The morning was cold.", "A bird sang outside.", "She lit the lamp early.", "Tea was brewing.",
             "The dog slept on.", "Rain tapped the glass.", "Letters lay unopened.", "A clock ticked.",
             "Nobody spoke for a while.", "The lamp flickered twice.", "Someone knocked at last.",
             "The door creaked open.", "A stranger stood there.", "He asked for directions.",
             "She pointed down the road.", "He thanked the lamp and left.", "The rain grew heavier.",
             "The dog woke up.", "She closed the curtains.", "Night came early."]
TEXT = " ".join(SENTENCES)


class _Counter(Listener):
    """Counts the chunks a worker synthesizes, per job."""

    def __init__(self) -> None:
        self.chunks: dict[str, int] = {}

    def chunk_done(self, job_id: str, done: int, total: int) -> None:
        self.chunks[job_id] = self.chunks.get(job_id, 0) + 1


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, tiny_vits_dir: Path) -> Iterator[tuple[ProducerSettings, Store,
                                                                                       WorkerRuntime, _Counter]]:
    """One in-process worker for the module: noise off and one chunk per batch (a padded batch changes the
    last samples of its shorter items, so only unbatched audio is the same whatever else is in the job)."""
    root = tmp_path_factory.mktemp("rerender")
    url = f"sqlite:///{root / 'store.db'}"
    settings = ProducerSettings(database_url=url, output_dir=root / "out", voice=str(tiny_vits_dir),
                                voice_dirs=TEST_VOICE_DIRS, max_chunk_chars=40)
    runtime = WorkerRuntime.start(WorkerSettings(database_url=url, output_dir=root / "out", voice=str(tiny_vits_dir),
                                                 voice_dirs=TEST_VOICE_DIRS, device="cpu", runtime="torch",
                                                 deterministic=True, token_budget=1, worker_name="test"))
    counter = _Counter()
    runtime.add_listener(counter)
    yield settings, open_store(url), runtime, counter
    runtime.stop()


def _run(runtime: WorkerRuntime, job_id: str) -> np.ndarray:
    assert runtime.run_job(job_id).status == JobStatus.SUCCEEDED
    data, _ = sf.read(str(job_views(runtime.store, [job_id])[0].audio_path), dtype="int16")
    return np.asarray(data)


@pytest.mark.slow
def test_a_changed_word_redoes_only_its_chunks_and_equals_a_fresh_render(env) -> None:  # type: ignore[no-untyped-def]
    settings, store, runtime, counter = env
    [job] = submit([JobRequest(text=TEXT, lexicon={"dog": "hound"})], settings, store, publisher=None)
    assert job.chunks_total == 20
    before = _run(runtime, job.id)
    assert counter.chunks[job.id] == 20

    done = rerender(store, job.id, settings, lexicon={"dog": "hound", "lamp": "lantern"})
    assert done.queued and done.chunks_redone == 3 and done.view.status == JobStatus.QUEUED
    after = _run(runtime, job.id)
    assert counter.chunks[job.id] == 20 + 3  # only the three chunks with "lamp" were synthesized again
    assert len(after) != len(before)

    [fresh] = submit([JobRequest(text=TEXT, lexicon={"dog": "hound", "lamp": "lantern"})], settings, store,
                     publisher=None, force=True)
    assert np.array_equal(_run(runtime, fresh.id), after)
    # The re-rendered job now holds that text and lexicon: an identical submission finds it.
    [same] = submit([JobRequest(text=TEXT, lexicon={"dog": "hound", "lamp": "lantern"})], settings, store,
                    publisher=None)
    assert same.id == job.id and not same.created
    # Nothing the voice says changes: nothing is redone and the job is left as it is.
    again = rerender(store, job.id, settings, lexicon={"lamp": "lantern", "dog": "hound", "zebra": "zee"})
    assert not again.queued and again.chunks_redone == 0 and again.view.status == JobStatus.SUCCEEDED


def test_a_corrected_text_keeps_the_unchanged_chunks(env, tmp_path: Path, redis_url: str) -> None:  # type: ignore[no-untyped-def]
    settings, store, runtime, counter = env
    [job] = submit([JobRequest(text=TEXT, id="corrected")], settings, store, publisher=None)
    _run(runtime, job.id)
    edited = [*SENTENCES]
    edited[7] = "A clock chimed."  # one sentence changed...
    edited.insert(12, "Thunder rolled.")  # ...and one added: the chunks after it shift, and are kept
    (tmp_path / "new.txt").write_text(" ".join(edited), encoding="utf-8")
    main(["rerender", job.id, "--text", str(tmp_path / "new.txt"), "--queue", "--json",
          "--database-url", settings.database_url, "--broker-url", redis_url])
    [view] = job_views(store, [job.id])
    assert (view.status, view.chunks_total, view.chunks_done) == (JobStatus.QUEUED, 21, 19)
    _run(runtime, job.id)
    assert counter.chunks[job.id] == 20 + 2  # the edited and the added sentence; the 19 others kept


def test_a_running_job_is_not_rerendered(env, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    settings, store, _runtime, _counter = env
    [job] = submit([JobRequest(text="Just one line.", id="busy")], settings, store, publisher=None)
    with store.session() as session:
        session.execute(update(Job).where(Job.id == job.id).values(status=JobStatus.RUNNING))
    with pytest.raises(InvalidInput, match="job busy is running: only a finished, failed or cancelled job"):
        rerender(store, job.id, settings, lexicon={"line": "row"})
    with pytest.raises(SystemExit) as exit_:
        main(["rerender", "nope", "--database-url", settings.database_url])
    assert exit_.value.code == 1 and capsys.readouterr().err.strip() == "error: no such job: nope"


def test_rerender_json_has_chunks_redone(env, capsys: pytest.CaptureFixture[str], redis_url: str) -> None:  # type: ignore[no-untyped-def]
    settings, store, runtime, _counter = env
    long_text = "One cat. Two dogs. Three birds. Four fish. Five frogs."  # five chunks: a long job
    [job, notice] = submit([JobRequest(text=long_text, id="jsonjob"), JobRequest(text="One cat. Two dogs.")],
                           settings, store, publisher=None)
    _run(runtime, job.id)
    _run(runtime, notice.id)
    lexicon = Path(settings.output_dir) / "lex.tsv"
    lexicon.write_text("cat\tkitty\n", encoding="utf-8")
    for job_id, redone in ((job.id, 1), (notice.id, 2)):  # a short job keeps no chunk audio: said again whole
        main(["rerender", job_id, "--lexicon", str(lexicon), "--queue", "--json",
              "--database-url", settings.database_url, "--broker-url", redis_url])
        [shown] = json.loads(capsys.readouterr().out)
        assert (shown["chunks_redone"], shown["status"], shown["id"]) == (redone, "queued", job_id)
