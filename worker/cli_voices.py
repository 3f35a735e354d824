"""`ttsfleet voices`: list voices; `voices import-piper`: convert a Piper voice."""

from __future__ import annotations

import typer

from schemas.errors import NotBuiltYet

app = typer.Typer(help="List voices, or convert a Piper voice into a transformers model folder.",
                  invoke_without_command=True)


@app.callback()
def voices(ctx: typer.Context) -> None:
    """List the voices this machine can use."""
    if ctx.invoked_subcommand is None:
        raise NotBuiltYet("`ttsfleet voices` is not built yet")


@app.command("import-piper")
def import_piper(onnx: str, config: str, out_dir: str) -> None:
    """Convert a Piper voice (ONNX + JSON config) into a transformers VITS folder."""
    raise NotBuiltYet("`ttsfleet voices import-piper` is not built yet")
