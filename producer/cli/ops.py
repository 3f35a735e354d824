"""Fleet operations: `backlog` (what an autoscaler sizes the workers by) and `gc` (the result TTL)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from producer.cli.common import DatabaseUrlOpt, JsonOpt, OutputDirOpt, environ, print_json
from schemas.settings import ProducerSettings

QueueOpt = Annotated[str | None, typer.Option(
    "--queue", help="count only jobs published to this queue (one worker class) [default: every queue]")]
PerWorkerOpt = Annotated[int, typer.Option(
    "--per-worker", min=1, help="jobs one worker should hold (queued + running); KEDA's targetQueryValue")]
TtlOpt = Annotated[float | None, typer.Option(
    "--ttl-s", envvar="TTSFLEET_RESULT_TTL_S", show_envvar=True,
    help="delete the audio of jobs that ended more than this many seconds ago")]


def backlog(queue: QueueOpt = None, per_worker: PerWorkerOpt = 1, as_json: JsonOpt = False,
            database_url: DatabaseUrlOpt = None) -> None:
    """Queued + running jobs in SQL, the workers they call for, and the SQL an autoscaler runs for it."""
    from schemas.backlog import read_backlog
    from schemas.db import open_store

    settings = ProducerSettings.from_env(environ(), database_url=database_url)
    found = read_backlog(open_store(settings.database_url), queue, per_worker)
    if as_json:
        print_json({"queue": found.queue, "queued": found.queued, "running": found.running,
                    "backlog": found.total, "per_worker": found.per_worker,
                    "workers_wanted": found.workers_wanted, "sql": found.sql})
        return
    Console().print(f"{found.total} jobs ({found.queued} queued, {found.running} running) on "
                    f"{found.queue or 'every queue'}: {found.workers_wanted} workers at {found.per_worker} each\n"
                    f"autoscaler query: {found.sql}", highlight=False)


def gc(ttl_s: TtlOpt = None, as_json: JsonOpt = False, database_url: DatabaseUrlOpt = None,
       output_dir: OutputDirOpt = None) -> None:
    """Delete the audio of jobs that ended longer ago than the result TTL and mark them purged (non-zero exit
    when the output store fails; run it again)."""
    from producer.results import purge_expired
    from schemas.db import open_store
    from schemas.errors import InvalidInput, RetryableError
    from schemas.storage import open_output_store

    settings = ProducerSettings.from_env(environ(), database_url=database_url, output_dir=output_dir,
                                         result_ttl_s=ttl_s)
    if settings.result_ttl_s is None:
        raise InvalidInput("no result TTL: give --ttl-s or set TTSFLEET_RESULT_TTL_S")
    purged = purge_expired(open_store(settings.database_url), open_output_store(settings.output_location),
                           settings.result_ttl_s)
    if as_json:
        print_json({"purged": purged.job_ids, "files_deleted": purged.files}
                   | ({"error": purged.error} if purged.error else {}))
    else:
        Console(stderr=True).print(f"{len(purged.job_ids)} jobs purged, {purged.files} files deleted")
    if purged.error:  # the job being purged is left unmarked: the next pass deletes what is left
        raise RetryableError(f"gc stopped: the output store failed ({purged.error}); run gc again")


def migrate(as_json: JsonOpt = False, database_url: DatabaseUrlOpt = None) -> None:
    """Bring the SQL store's schema to this release's revision (under a lock; a no-op when it is there).
    Every command migrates on first use; this is the explicit one-shot step of an upgrade."""
    from schemas.db import current_revision, open_store

    settings = ProducerSettings.from_env(environ(), database_url=database_url)
    revision = current_revision(open_store(settings.database_url).engine)
    if as_json:
        print_json({"revision": revision})
    else:
        Console(stderr=True).print(f"store at revision {revision}")
