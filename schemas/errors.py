"""The one exception tree of ttsfleet.

`RetryableError`: the same call may succeed later (broker or database down, a lease held elsewhere);
the Celery task retries it with backoff. `PermanentError`: the input or configuration is wrong; the job
is marked failed with the message and never retried. The CLI prints either as one line.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


class TtsfleetError(Exception):
    """Root of every error ttsfleet raises on purpose."""


class RetryableError(TtsfleetError):
    """A transient failure: try again later."""


class PermanentError(TtsfleetError):
    """A failure that retrying cannot fix."""


class InvalidInput(PermanentError):
    """Raised when submitted text, a file or a JSONL line is unusable (empty, undecodable, malformed)."""


class UnknownVoice(PermanentError):
    """Raised when a job names a voice no worker can load."""


class JobNotFound(PermanentError):
    """Raised when a job id is not in the store."""


class PrecisionRefused(PermanentError):
    """Raised at worker start when the requested precision cannot run on the device."""


class SynthesisFailed(PermanentError):
    """Raised when a chunk cannot be synthesized even after the fallbacks (OOM at one chunk, NaN in fp32)."""


class WorkerStopping(TtsfleetError):
    """Raised at a chunk boundary when the worker was asked to stop (SIGTERM): the job is put back with the
    chunks it has, for another worker to resume."""


class DeviceLost(TtsfleetError):
    """Raised after a CUDA error that leaves the context unusable; the worker puts the job back and exits."""


class BrokerUnavailable(RetryableError):
    """Raised when the broker cannot be reached to publish a job."""


class StoreUnavailable(RetryableError):
    """Raised when the SQL store cannot be reached."""


class JobInterrupted(TtsfleetError):
    """Raised when a job we hold was cancelled or its lease was taken over: stop at this chunk boundary.

    Neither retryable nor permanent: the job is no longer this worker's to run or to fail.
    """


def first_line(err: BaseException) -> str:
    """The first line of an error's message (a database error's own message, not SQLAlchemy's wrapper),
    or its type name when it has none: what a one-line error shows."""
    text = str(getattr(err, "orig", None) or err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def redact_url(url: str) -> str:
    """`url` with its password replaced by `***`, fit for an error or a log line."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        host = parts.hostname or ""
        if parts.port is not None:
            host = f"{host}:{parts.port}"
        return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))
    except ValueError:  # unparsable: show nothing of it rather than a secret
        return "<unparsable URL>"
