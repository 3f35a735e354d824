"""The `ttsfleet` command: one entry point, thin commands, one-line errors (`--debug` for tracebacks).

Command modules are imported here but import torch, Celery and the store only inside their bodies,
so `ttsfleet --help` stays fast.
"""

from __future__ import annotations

import sys
import traceback

import typer

from producer import cli_fleet, cli_jobs
from schemas.errors import TtsfleetError
from worker import cli as worker_cli
from worker import cli_doctor, cli_voices

app = typer.Typer(
    name="ttsfleet",
    help="Batch text-to-speech on a fleet of mixed GPU and CPU workers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

app.command("run")(cli_jobs.run)
app.command("submit")(cli_jobs.submit)
app.command("status")(cli_jobs.status)
app.command("wait")(cli_jobs.wait)
app.command("cancel")(cli_jobs.cancel)
app.command("worker")(worker_cli.worker)
app.command("doctor")(cli_doctor.doctor)
app.command("workers")(cli_fleet.workers)
app.command("stats")(cli_fleet.stats)
app.add_typer(cli_voices.app, name="voices")


def main(argv: list[str] | None = None) -> None:
    """Console entry point. Exit codes: 0 ok, 1 failure (one line on stderr), 2 usage error."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    args = [a for a in args if a != "--debug"]
    try:
        app(args, standalone_mode=False)
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

        if isinstance(err, click.ClickException):
            err.show()
            sys.exit(err.exit_code)
        _fail(err, debug)


def _fail(err: BaseException, debug: bool) -> None:
    if debug:
        traceback.print_exception(err)
    message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    sys.stderr.write(f"error: {message}\n")
    sys.exit(1)
