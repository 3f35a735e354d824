"""Pieces every command shares: setting flags that mirror environment variables, output helpers."""

from __future__ import annotations

import json
import os
import sys
from typing import Annotated, Any

import typer
from rich.console import Console

BrokerUrlOpt = Annotated[
    str | None, typer.Option("--broker-url", envvar="TTSFLEET_BROKER_URL", show_envvar=True,
                             help="Celery broker URL [default: redis://localhost:6379/0]")]
DatabaseUrlOpt = Annotated[
    str | None, typer.Option("--database-url", envvar="TTSFLEET_DATABASE_URL", show_envvar=True,
                             help="SQL store URL [default: sqlite:///ttsfleet.db]")]
OutputDirOpt = Annotated[
    str | None, typer.Option("--output-dir", envvar="TTSFLEET_OUTPUT_DIR", show_envvar=True,
                             help="where audio is written: a folder or an fsspec URL such as s3://bucket/prefix "
                                  "[default: ttsfleet-output]")]
VoiceOpt = Annotated[
    str | None, typer.Option("--voice", envvar="TTSFLEET_VOICE", show_envvar=True,
                             help="voice for jobs that name none; NAME#SPEAKER picks a multi-speaker voice's "
                                  "speaker; narrator=A,dialogue=B speaks quoted text with B [default: piper:joe]")]
VoiceDirsOpt = Annotated[
    str | None, typer.Option("--voice-dirs", envvar="TTSFLEET_VOICE_DIRS", show_envvar=True,
                             help="folders (':'-separated) whose voice folders jobs may use; no other folder is "
                                  "loaded as a voice [default: $XDG_DATA_HOME/ttsfleet/voices]")]
JsonOpt = Annotated[bool, typer.Option("--json", help="machine-readable output on stdout, nothing else")]
# str, not the Precision enum: an unknown name gets the same one-line refusal as a precision the card
# cannot run (worker.precision.choose_policy), whichever command it was given to.
DeviceOpt = Annotated[
    str | None, typer.Option("--device", envvar="TTSFLEET_DEVICE", show_envvar=True,
                             help="auto, cpu, cuda, cuda:N or mps [default: auto]")]
PrecisionOpt = Annotated[
    str | None, typer.Option("--precision", envvar="TTSFLEET_PRECISION", show_envvar=True,
                             help="auto, bf16, fp16 or fp32; one the card cannot run is refused [default: auto]")]
RuntimeOpt = Annotated[
    str | None, typer.Option("--runtime", envvar="TTSFLEET_RUNTIME", show_envvar=True,
                             help="auto (onnxruntime on a CPU for Piper voices, else torch), torch or "
                                  "onnxruntime [default: auto]")]
ThreadsOpt = Annotated[
    int | None, typer.Option("--threads", envvar="TTSFLEET_THREADS", show_envvar=True, min=1,
                             help="intra-op threads for synthesis [default: the cores this process may use]")]

err_console = Console(stderr=True)


def environ() -> dict[str, str]:
    """The environment, read once per command (never at import)."""
    return dict(os.environ)


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, default=str) + "\n")
    sys.stdout.flush()


def stdout_is_terminal() -> bool:
    return sys.stdout.isatty()
