"""Fidelity where users see it: `ttsfleet doctor --fidelity` (on this CPU, the requested precision under
torch autocast), the workers table and `ttsfleet workers`, and every job's metrics in `ttsfleet stats`."""

from __future__ import annotations

import json
from dataclasses import asdict, fields
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
from sqlalchemy import inspect as sql_inspect

from producer.stats import compute_stats, list_workers
from schemas.db import open_store
from schemas.settings import WorkerSettings
from schemas.status import Backend, DType, JobStatus
from schemas.tables import Job, JobMetrics, utcnow
from tests.conftest import TEST_VOICE_DIRS
from tests.fakes import FakeEngine
from tests.test_engine import CPU_BF16
from tests.test_stats import _worker
from worker import registry
from worker.device import parse_simulated
from worker.events import JobFigures
from worker.fidelity import SNR_CEILING_DB, Fidelity
from worker.precision import with_fp32
from worker.synthesis import PolicyQuality, policy_quality


def _doctor(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    from producer.cli import main

    try:
        main(["doctor", *args])
        code = 0
    except SystemExit as done:
        code = int(done.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("precision", ["bf16", "fp16", "fp32"])
def test_doctor_fidelity_json_on_this_cpu(precision: str, tiny_vits_dir: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _doctor(["--fidelity", "--json", "--device", "cpu", "--precision", precision,
                              "--voice", str(tiny_vits_dir), "--voice-dirs", TEST_VOICE_DIRS,
                              "--voices-cache-dir", str(tmp_path)], capsys)
    assert code == 0, err
    report = json.loads(out)  # --json: one object on stdout and nothing else
    measured = report["fidelity"]
    assert report["dtype"] == {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}[precision]
    assert measured["voice"] == str(tiny_vits_dir) and measured["emulated"] is True and measured["sentences"] == 4
    assert set(measured["bar"]) == {"max_mel_distance_db", "min_snr_db", "max_duration_error"}
    assert measured["meets_bar"] is True and measured["problem"] is None
    if precision == "fp32":  # two fp32 runs of the same text: identical
        assert (measured["mel_distance_db"], measured["snr_db"], measured["duration_error"]) == (
            0.0, SNR_CEILING_DB, 0.0)
        assert measured["worker_policy"] == {"dtype": "float32", "keep_fp32": [], "note": None}
    else:  # autocast changed the audio, a little
        assert 0 < measured["mel_distance_db"] < 1 and 20 < measured["snr_db"] < SNR_CEILING_DB
        assert report["mode"] == "autocast" and "text_encoder" in report["keep_fp32"]
        assert measured["worker_policy"]["snr_db"] == measured["snr_db"]


def test_doctor_fidelity_table_and_refusals(tiny_vits_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # the table's width: rich reads it, so no cell is cut short
    code, out, err = _doctor(["--fidelity", "--device", "cpu", "--precision", "bf16", "--voice", str(tiny_vits_dir),
                              "--voice-dirs", TEST_VOICE_DIRS, "--voices-cache-dir", str(tmp_path)], capsys)
    assert code == 0, err
    assert "fidelity" in out and "SNR" in out and "meets the bar" in out and "this policy as it is" in out
    code, out, err = _doctor(["--fidelity", "--simulate", "Tesla T4:7.5:16"], capsys)
    assert code != 0 and out == "" and "cannot be combined with --simulate" in err and len(err.splitlines()) == 1
    code, out, err = _doctor(["--fidelity", "--device", "cpu", "--precision", "fp8"], capsys)
    assert code != 0 and out == "" and "unknown precision 'fp8'" in err


MIXED = with_fp32(CPU_BF16, ("decoder",), "decoder kept in fp32 for fidelity")
MEASURED = Fidelity(mel_distance_db=0.41, snr_db=27.5, duration_error=0.0, sentences=4)


def test_job_figures_carry_the_policy_quality_into_the_metrics_columns() -> None:
    quality = policy_quality(MIXED, MEASURED)
    assert quality == {"keep_fp32": "text_encoder,duration_predictor,decoder", "fidelity_mel_db": 0.41,
                       "fidelity_snr_db": 27.5, "fidelity_duration_error": 0.0}
    figures = JobFigures(card="c", capability=None, backend=Backend.CPU, dtype=DType.BFLOAT16, chunks=1, audio_s=1.0,
                         synth_s=0.1, peak_mem_bytes=None, oom_retries=0, fp32_fallbacks=0, batches=1, **quality)
    assert {name: getattr(figures, name) for name in PolicyQuality.__annotations__} == quality
    # lease.finish stores asdict(figures) as a job_metrics row: every field must be a column of it.
    columns = {c.key for c in sql_inspect(JobMetrics).columns}
    assert {f.name for f in fields(JobFigures)} <= columns and set(asdict(figures)) <= columns
    assert policy_quality(CPU_BF16.__class__(**{**asdict(CPU_BF16), "dtype": "float32", "keep_fp32": ()}),
                          None)["fidelity_snr_db"] is None


def test_the_workers_row_and_stats_show_the_policy_and_its_fidelity(tmp_path: Path) -> None:
    from producer.cli.fleet import fidelity_text
    from worker.runtime import WorkerRuntime

    url = f"sqlite:///{tmp_path / 'store.db'}"
    store = open_store(url)
    device = parse_simulated("cpu::8")
    runtime = WorkerRuntime(WorkerSettings(database_url=url), store, device, CPU_BF16)
    engine = FakeEngine(policy=MIXED, fidelity=MEASURED)
    engine.runner = SimpleNamespace(threads=2)  # type: ignore[attr-defined]  # the row reads the runner's threads
    runtime._engines["tiny"] = engine  # type: ignore[assignment]
    runtime.policy = MIXED  # as `start` sets it from the default voice's engine
    registry.register_worker(store, runtime.registry_row())
    [view] = list_workers(store)
    assert view.keep_fp32 == "text_encoder,duration_predictor,decoder" and view.dtype == "bfloat16"
    assert (view.fidelity_mel_db, view.fidelity_snr_db, view.fidelity_duration_error) == (0.41, 27.5, 0.0)
    assert json.loads(json.dumps(view.as_dict(), default=str))["fidelity_snr_db"] == 27.5
    now = utcnow()
    with store.session() as s:
        s.add(_worker("w-p40", "Tesla P40", "float32", now))
        for n, (card, dtype, quality) in enumerate([
                ("RTX", "bfloat16", policy_quality(MIXED, MEASURED)),
                ("RTX", "bfloat16", policy_quality(CPU_BF16, Fidelity(0.2, 31.0, 0.0, 4))),
                ("P40", "float32", policy_quality(CPU_BF16.__class__(**{**asdict(CPU_BF16), "keep_fp32": ()}),
                                                  None))]):
            s.add(Job(id=f"j{n}", idempotency_key=f"j{n}", status=JobStatus.SUCCEEDED, voice="v", format="wav",
                      text="x", created_at=now - timedelta(seconds=5), finished_at=now))
            s.add(JobMetrics(job_id=f"j{n}", worker_id=view.id, voice="v", card=card, capability=None, backend="cpu",
                             dtype=dtype, chars=10, chunks=1, audio_s=1.0, synth_s=0.5, queue_wait_s=0.0,
                             latency_s=1.0, batches=1, finished_at=now, **quality))
    rows = {r.keys["card"]: r for r in compute_stats(store, ["card", "dtype"])}
    worst = rows["RTX"]  # the group's worst fidelity and its longest fp32 list
    assert (worst.fidelity_mel_db, worst.fidelity_snr_db) == (0.41, 27.5)
    assert worst.keep_fp32 == "text_encoder,duration_predictor,decoder"
    assert (rows["P40"].fidelity_mel_db, rows["P40"].keep_fp32) == (None, "")
    assert fidelity_text(worst.fidelity_mel_db, worst.fidelity_snr_db, "bfloat16") == "mel 0.41 dB · SNR 27.5 dB"
    assert fidelity_text(None, None, "float32") == "fp32 (reference)"
    assert "fidelity_snr_db" in worst.as_dict()
    store.dispose()
