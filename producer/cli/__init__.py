"""The `ttsfleet` command: one entry point, thin commands, one-line errors (`--debug` for tracebacks).

This package is the CLI layer, the only one that imports both `producer` and `worker` (see
docs/architecture.md). Command modules are imported here but import torch, Celery, the store and the
worker only inside their bodies, so `ttsfleet --help` stays fast.
"""

from __future__ import annotations

import sys
import traceback

import typer

from producer.cli import device, fleet, jobs, ops, rerender, service, simulate, voices
from schemas.errors import TtsfleetError, first_line

app = typer.Typer(
    name="ttsfleet",
    help="Batch text-to-speech on a fleet of mixed GPU and CPU workers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

app.command("run")(jobs.run)
app.command("submit")(jobs.submit)
app.command("status")(jobs.status)
app.command("wait")(jobs.wait)
app.command("cancel")(jobs.cancel)
app.command("retry")(jobs.retry)
app.command("rerender")(rerender.rerender)
app.command("worker")(device.worker)
app.command("doctor")(device.doctor)
app.command("workers")(fleet.workers)
app.command("stats")(fleet.stats)
app.command("backlog")(ops.backlog)
app.command("gc")(ops.gc)
app.command("migrate")(ops.migrate)
app.command("simulate")(simulate.simulate)
app.add_typer(voices.app, name="voices")
app.command("serve")(service.serve)
app.add_typer(service.keys_app, name="keys")


def main(argv: list[str] | None = None) -> None:
    """Console entry point. Exit codes: 0 ok, 1 failure (one line on stderr), 2 usage error."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    args = [a for a in args if a != "--debug"]
    try:
        # Without standalone mode click answers a `typer.Exit(code)` by returning the code, not raising it:
        # passed on here, or `wait` on a failed job would exit 0.
        code = app(args, standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)
    except TtsfleetError as err:
        _fail(err, debug)
    except typer.Exit as done:
        sys.exit(done.exit_code)
    except typer.Abort:
        sys.stderr.write("error: aborted\n")
        sys.exit(130)
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted\n")
        sys.exit(130)
    except Exception as err:  # the outermost boundary: one line unless --debug
        import click

        # typer raises its own ClickException copy (typer._click), not click's: both name the option.
        if isinstance(err, click.ClickException | typer.TyperException) and hasattr(err, "show"):
            err.show()
            sys.exit(getattr(err, "exit_code", 2))
        _fail(err, debug)


def _fail(err: BaseException, debug: bool) -> None:
    if debug:
        traceback.print_exception(err)
    sys.stderr.write(f"error: {first_line(err)}\n")
    sys.exit(1)
