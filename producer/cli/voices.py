"""`ttsfleet voices`: list voices; `voices import-piper`: convert a Piper voice.

torch, onnx and piper are imported inside the commands so `ttsfleet --help` stays fast.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer

from schemas.errors import PermanentError

app = typer.Typer(help="List voices, or convert a Piper voice into a transformers model folder.",
                  invoke_without_command=True)


@app.callback()
def voices(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list of voices on stdout.")] = False,
) -> None:
    """List the voices this machine can use (bundled Piper voices and VITS models in the local HF cache)."""
    if ctx.invoked_subcommand is not None:
        return
    from schemas.voices import list_voices

    found = list_voices()
    if as_json:
        typer.echo(json.dumps([asdict(v) for v in found], indent=1))
        return
    for v in found:
        rate = f"{v.sample_rate_hz} Hz" if v.sample_rate_hz else "? Hz"
        state = "ready" if v.available else "missing"
        typer.echo(f"{v.name:<28} {v.kind:<6} {v.language:<3} {rate:>9}  {state:<7}  {v.detail}")
    typer.echo("also: hf:ORG/NAME (needs hub access unless cached) or a model folder "
               "(`ttsfleet voices import-piper ONNX CONFIG DIR`)")


@app.command("import-piper")
def import_piper(
    onnx: Annotated[Path, typer.Argument(help="The Piper voice's .onnx file.")],
    config: Annotated[Path, typer.Argument(help="The voice's .onnx.json config.")],
    out_dir: Annotated[Path, typer.Argument(help="Folder to write (must be empty or absent).")],
) -> None:
    """Convert a Piper voice (ONNX + JSON config) into a transformers VITS folder; use it as a voice by path."""
    for path in (onnx, config):
        if not path.is_file():
            raise PermanentError(f"no such file: {path}")
    if out_dir.exists() and any(out_dir.iterdir()):
        raise PermanentError(f"{out_dir} is not empty; choose a new folder")
    from worker.piper import convert_piper

    folder = convert_piper(onnx, config, out_dir)
    typer.echo(f"converted {onnx.name} -> {folder} (use it with --voice {folder}; its parent folder must be "
               f"one of the voice directories, TTSFLEET_VOICE_DIRS)")
    from schemas.voices import resolve_voice_name

    info = resolve_voice_name(str(folder))
    if info.num_speakers > 1:
        named = ", ".join(f"{n} ({i})" for n, i in sorted(info.speakers.items(), key=lambda kv: kv[1])[:20])
        typer.echo(f"{info.num_speakers} speakers{': ' + named if named else ''}; pick one with "
                   f"--voice {folder}#NAME or #NUMBER (speaker 0 when none is named)")
