"""`ttsfleet worker` (start one worker for one device) and `ttsfleet doctor` (the device and the precision
policy chosen for it). Both decide through `worker.precision`, so `doctor` refuses exactly what `worker`
refuses: a precision the card cannot run is one line and a non-zero exit.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer

from producer.cli.common import (
    BrokerUrlOpt,
    DatabaseUrlOpt,
    DeviceOpt,
    JsonOpt,
    OutputDirOpt,
    PrecisionOpt,
    RuntimeOpt,
    ThreadsOpt,
    VoiceDirsOpt,
    VoiceOpt,
    environ,
    print_json,
)

QueuesOpt = Annotated[str | None, typer.Option("--queues", envvar="TTSFLEET_QUEUES", show_envvar=True,
                                               help="comma-separated queues to consume [default: ttsfleet]")]
NameOpt = Annotated[str | None, typer.Option("--name", envvar="TTSFLEET_WORKER_NAME", show_envvar=True,
                                             help="worker slot name [default: HOST/DEVICE]")]
MetricsPortOpt = Annotated[int | None, typer.Option("--metrics-port", envvar="TTSFLEET_METRICS_PORT", show_envvar=True,
                                                    help="serve Prometheus metrics on this port (0: any)")]
CacheDirOpt = Annotated[Path | None, typer.Option("--voices-cache-dir", envvar="TTSFLEET_VOICES_CACHE_DIR",
                                                  show_envvar=True, help="where converted voices are cached "
                                                  "[default: $XDG_CACHE_HOME/ttsfleet/voices]")]
DeterministicOpt = Annotated[bool | None, typer.Option("--deterministic", envvar="TTSFLEET_DETERMINISTIC",
                                                       show_envvar=True, help="noise off: same text, same audio")]
TokenBudgetOpt = Annotated[int | None, typer.Option("--token-budget", envvar="TTSFLEET_TOKEN_BUDGET", show_envvar=True,
                                                    help="max input tokens per batch [default: from memory]")]
HealthDirOpt = Annotated[Path | None, typer.Option(
    "--health-dir", envvar="TTSFLEET_HEALTH_DIR", show_envvar=True,
    help="write probe files here: `ready` once the voice passed its canary, `heartbeat` on every beat")]
SegmentCharsOpt = Annotated[int | None, typer.Option(
    "--segment-chars", envvar="TTSFLEET_SEGMENT_CHARS", show_envvar=True,
    help="cut jobs of twice this many characters into segments idle workers help with; 0: never [3000]")]
JoinJobsOpt = Annotated[int | None, typer.Option(
    "--join-jobs", envvar="TTSFLEET_JOIN_JOBS", show_envvar=True, min=1,
    help="run a short job together with up to this many minus one queued short jobs of its voice; 1: alone [32]")]
SimulateOpt = Annotated[str | None, typer.Option(
    "--simulate", metavar="NAME:MAJOR.MINOR:MEMORY_GB",
    help="describe a card that is not here, e.g. 'Tesla T4:7.5:16', 'cpu::32' (no torch device used)")]


def worker(device: DeviceOpt = None, precision: PrecisionOpt = None, queues: QueuesOpt = None,
           voice: VoiceOpt = None, broker_url: BrokerUrlOpt = None, database_url: DatabaseUrlOpt = None,
           output_dir: OutputDirOpt = None, name: NameOpt = None, metrics_port: MetricsPortOpt = None,
           voices_cache_dir: CacheDirOpt = None, deterministic: DeterministicOpt = None,
           token_budget: TokenBudgetOpt = None, voice_dirs: VoiceDirsOpt = None, runtime: RuntimeOpt = None,
           threads: ThreadsOpt = None, health_dir: HealthDirOpt = None, segment_chars: SegmentCharsOpt = None,
           join_jobs: JoinJobsOpt = None, loglevel: Annotated[str, typer.Option(help="log level")] = "INFO") -> None:
    """Start one worker for one device: pin its precision, load the voice, take jobs from the broker."""
    from schemas.settings import WorkerSettings
    from worker.serve import serve

    settings = WorkerSettings.from_env(
        environ(), device=device, precision=precision, queues=queues, voice=voice, broker_url=broker_url,
        database_url=database_url, output_dir=output_dir, worker_name=name, metrics_port=metrics_port,
        voices_cache_dir=voices_cache_dir, deterministic=deterministic, token_budget=token_budget,
        voice_dirs=voice_dirs, runtime=runtime, threads=threads, health_dir=health_dir,
        segment_chars=segment_chars, join_jobs=join_jobs)
    logging.basicConfig(level=loglevel.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    serve(settings, loglevel)


FidelityOpt = Annotated[bool, typer.Option(
    "--fidelity", help="measure the policy's audio against fp32 for the worker's voice (log-mel distance, SNR, "
                       "lengths); on a CPU the precision runs under torch autocast, emulated and slow")]


def doctor(json_output: JsonOpt = False, simulate: SimulateOpt = None, precision: PrecisionOpt = None,
           device: DeviceOpt = None, runtime: RuntimeOpt = None, fidelity: FidelityOpt = False,
           voice: VoiceOpt = None, voice_dirs: VoiceDirsOpt = None, voices_cache_dir: CacheDirOpt = None) -> None:
    """Show the device (or a simulated one) and the precision policy chosen for it, with the reason."""
    from worker.precision import describe, resolve

    if fidelity:
        info, policy, report = _fidelity(device, precision, simulate, voice, voice_dirs, voices_cache_dir)
    else:
        info, policy = resolve(device or "auto", precision or "auto", simulate, runtime or "auto")
        report = describe(info, policy)
    if json_output:
        print_json(report)
        return
    _print_doctor(info, policy, report)


def _fidelity(device: str | None, precision: str | None, simulate: str | None, voice: str | None,
              voice_dirs: str | None, voices_cache_dir: Path | None) -> tuple[Any, Any, dict[str, Any]]:
    """The device, the policy measured and the `doctor --json` report with its `fidelity` object. On a CPU
    the requested precision runs under torch autocast (what a card computes, emulated); on a card it is the
    policy `worker` would pin (refused alike)."""
    import time

    from schemas.errors import InvalidInput
    from schemas.settings import WorkerSettings
    from schemas.status import Backend
    from worker.canary import fidelity_report
    from worker.device import detect_device
    from worker.fidelity import DEFAULT_BAR
    from worker.precision import autocast_policy, choose_policy, describe
    from worker.voices import load_voice

    if simulate:
        raise InvalidInput("--fidelity measures the device that is here; it cannot be combined with --simulate")
    settings = WorkerSettings.from_env(environ(), voice=voice, voice_dirs=voice_dirs, voices_cache_dir=voices_cache_dir)
    info = detect_device(device or "auto")
    if info.backend == Backend.CUDA:  # refused exactly as `worker` refuses it
        policy = choose_policy(info, precision or "auto", "torch")
    else:
        policy = autocast_policy(info, precision or "auto")
    started = time.perf_counter()
    _quiet_transformers()
    loaded = load_voice(settings.voice, settings.voices_cache_dir, settings.voice_dir_list)
    settled = fidelity_report(loaded, info, policy, DEFAULT_BAR)
    report = describe(info, policy)
    report["fidelity"] = {
        "voice": settings.voice, "emulated": info.backend != Backend.CUDA, **asdict(settled.measured),
        "meets_bar": DEFAULT_BAR.problem(settled.measured) is None, "problem": DEFAULT_BAR.problem(settled.measured),
        "bar": asdict(DEFAULT_BAR), "seconds": round(time.perf_counter() - started, 1),
        "worker_policy": {"dtype": settled.policy.dtype, "keep_fp32": list(settled.policy.keep_fp32),
                          **(asdict(settled.fidelity) if settled.fidelity is not None else {}),
                          "note": settled.note},
    }
    return info, policy, report


def _quiet_transformers() -> None:
    """No progress bars or load reports from transformers on a command's output."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def _print_doctor(info: Any, policy: Any, report: dict[str, Any]) -> None:
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
        ("runtime", policy.runtime),
        ("reason", policy.reason),
    ]
    measured = report.get("fidelity")
    if measured is not None:
        from worker.fidelity import Fidelity

        verdict = "meets the bar" if measured["meets_bar"] else f"below the bar: {measured['problem']}"
        figures = Fidelity(**{k: measured[k] for k in Fidelity.__dataclass_fields__})
        rows += [("fidelity", f"{measured['voice']}: {figures.summary()}, {figures.sentences} sentences against "
                              f"fp32 ({verdict})"),
                 ("worker runs", measured["worker_policy"]["note"] or "this policy as it is")]
    for key, value in rows:
        table.add_row(key, str(value))
    Console().print(table)
