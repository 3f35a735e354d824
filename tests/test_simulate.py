"""The fleet simulator: the workers' scheduling code on a simulated clock."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from producer.simulate import CardSpec, FleetSpec, JobSpec, Policy, load_workload, simulate
from schemas.errors import InvalidInput

ROOT = Path(__file__).resolve().parent.parent
LONG = JobSpec.model_validate({"class": "book", "audio_s": 3600})


def _fleet(*cards: tuple[str, float]) -> FleetSpec:
    return FleetSpec(card=[CardSpec(name=n, speed_x=s) for n, s in cards], piece_overhead_s=0.0, segment_chars=3000)


def test_segments_let_two_cards_share_one_long_job() -> None:
    fleet = _fleet(("a", 10.0), ("b", 10.0))
    assert simulate(fleet, [LONG], Policy.FIFO).makespan_s == pytest.approx(360)
    assert simulate(fleet, [LONG], Policy.SEGMENTS).makespan_s == pytest.approx(180, rel=0.05)


def test_card_aware_gives_the_long_job_to_the_fast_card_and_notices_to_the_slow_one() -> None:
    notices = [JobSpec.model_validate({"class": "notice", "audio_s": 10}) for _ in range(20)]
    fleet = FleetSpec(card=[CardSpec(name="slow", speed_x=1.0), CardSpec(name="fast", speed_x=100.0)],
                      piece_overhead_s=0.0, segment_chars=0)  # whole jobs: only the choice differs
    fifo = simulate(fleet, [LONG, *notices], Policy.FIFO)  # the slow card asks first and takes the book
    aware = simulate(fleet, [LONG, *notices], Policy.CARD_AWARE)
    assert fifo.makespan_s == pytest.approx(3600)
    assert aware.p95_latency_s["book"] == pytest.approx(36)  # the fast card took it at once
    assert aware.makespan_s < fifo.makespan_s / 10


def test_a_bad_workload_line_is_one_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "w.jsonl"
    bad.write_text('{"class": "book", "audio_s": 10}\n{"audio_s": -1}\n')
    with pytest.raises(InvalidInput, match=r"w.jsonl:2:"):
        load_workload(bad)


def test_the_simulate_command_reports_the_three_policies() -> None:
    examples = ROOT / "bench" / "simulate"
    done = subprocess.run([sys.executable, "-m", "producer.cli", "simulate", "--fleet", str(examples / "fleet.toml"),
                           "--workload", str(examples / "workload.jsonl"), "--json"],
                          capture_output=True, text=True, check=False, timeout=120)
    assert done.returncode == 0, done.stderr
    assert [r["policy"] for r in json.loads(done.stdout)] == ["fifo", "segments", "card-aware"]
