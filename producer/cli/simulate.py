"""`ttsfleet simulate`: a fleet and a workload through the workers' scheduling code, for each policy."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from producer.cli import common as cli_common
from producer.cli.common import JsonOpt

FleetOpt = Annotated[Path, typer.Option("--fleet", help="fleet.toml: [[card]] name, count, speed_x (audio s per s)")]
WorkloadOpt = Annotated[Path, typer.Option("--workload", help="workload.jsonl: class, audio_s or chars, "
                                                                "arrival_s, priority per line")]


def simulate(fleet: FleetOpt, workload: WorkloadOpt, json_output: JsonOpt = False) -> None:
    """Makespan, p95 latency per job class and card utilisation: job-level FIFO, segment leases, and
    segment leases with the card-aware choice."""
    from rich.console import Console
    from rich.table import Table

    from producer.simulate import Policy, load_fleet, load_workload
    from producer.simulate import simulate as run

    spec, jobs = load_fleet(fleet), load_workload(workload)
    results = [run(spec, jobs, policy) for policy in Policy]
    if json_output:
        cli_common.print_json([r.__dict__ for r in results])
        return
    classes = sorted(results[0].p95_latency_s)
    table = Table(title=f"{sum(c.count for c in spec.card)} cards, {len(jobs)} jobs")
    for col in ("policy", "makespan s", *(f"p95 {c} s" for c in classes), "utilisation"):
        table.add_column(col)
    for r in results:
        busy = ", ".join(f"{name} {share:.0%}" for name, share in r.utilisation.items())
        table.add_row(r.policy, f"{r.makespan_s:.0f}", *(f"{r.p95_latency_s[c]:.0f}" for c in classes), busy)
    Console().print(table)
