"""`ttsfleet doctor`: the device found (or simulated) and the precision policy chosen for it.

A precision the card cannot run raises PrecisionRefused, which the CLI prints as one line with a non-zero
exit, exactly as `ttsfleet worker` refuses it (both decide through `worker.precision.resolve`).
"""

from __future__ import annotations

from typing import Annotated

import typer

from producer.cli_common import JsonOpt, print_json

SimulateOpt = Annotated[str | None, typer.Option(
    "--simulate", metavar="NAME:MAJOR.MINOR:MEMORY_GB",
    help="describe a card that is not here, e.g. 'Tesla T4:7.5:16', 'cpu::32' (no torch device used)")]
PrecisionOpt = Annotated[str, typer.Option(
    "--precision", envvar="TTSFLEET_PRECISION", show_envvar=True, help="auto, bf16, fp16 or fp32")]
DeviceOpt = Annotated[str, typer.Option(
    "--device", envvar="TTSFLEET_DEVICE", show_envvar=True, help="auto, cpu, cuda, cuda:N or mps")]


def doctor(json_output: JsonOpt = False, simulate: SimulateOpt = None, precision: PrecisionOpt = "auto",
           device: DeviceOpt = "auto") -> None:
    """Show the device (or a simulated one) and the precision policy chosen for it, with the reason."""
    from worker.precision import describe, resolve

    info, policy = resolve(device, precision, simulate)
    report = describe(info, policy)
    if json_output:
        print_json(report)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    rows = [
        ("device", f"{report['device']}" + (" (simulated)" if info.simulated else "")),
        ("name", info.name),
        ("capability", report["capability"] or "-"),
        ("memory", f"{report['memory_gb']} GiB" if report["memory_gb"] is not None else "unknown"),
        ("dtype", policy.dtype),
        ("tf32", "on" if policy.tf32 else "off"),
        ("mode", policy.mode + (f" (fp32: {', '.join(policy.keep_fp32)})" if policy.keep_fp32 else "")),
        ("runs on", policy.run_on),
        ("reason", policy.reason),
    ]
    for key, value in rows:
        table.add_row(key, str(value))
    Console().print(table)
