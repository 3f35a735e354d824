"""Typed settings, one object per process role, built once from flags and environment and passed down.

Every field `x` is read from the environment variable `TTSFLEET_X`; a flag given on the command line wins.
Nothing here reads the environment at import time.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from schemas.errors import InvalidInput
from schemas.status import Precision
from schemas.storage import is_url, local_path_of

ENV_PREFIX = "TTSFLEET_"
DEFAULT_VOICE = "piper:joe"
DEFAULT_QUEUE = "ttsfleet"


def default_voice_dir(environ: Mapping[str, str]) -> Path:
    """Where local voice folders live by default (`voices import-piper` into it):
    `$XDG_DATA_HOME/ttsfleet/voices`, else `$HOME/.local/share/ttsfleet/voices`."""
    base = environ.get("XDG_DATA_HOME") or str(Path(environ.get("HOME") or Path.home()) / ".local" / "share")
    return Path(base).expanduser() / "ttsfleet" / "voices"


def default_voices_cache_dir(environ: Mapping[str, str]) -> Path:
    """Where converted voices are cached when TTSFLEET_VOICES_CACHE_DIR is not set:
    `$XDG_CACHE_HOME/ttsfleet/voices`, else `$HOME/.cache/ttsfleet/voices`."""
    base = environ.get("XDG_CACHE_HOME") or str(Path(environ.get("HOME") or Path.home()) / ".cache")
    return Path(base).expanduser() / "ttsfleet" / "voices"


class Settings(BaseModel):
    """What every role needs: where the broker, the store and the audio are, and the default voice."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    broker_url: str = "redis://localhost:6379/0"
    database_url: str = "sqlite:///ttsfleet.db"
    output_dir: Path = Path("ttsfleet-output")
    # Set from `output_dir` when that is a remote fsspec URL (`s3://bucket/prefix`): audio goes there and
    # `output_dir` stays the local default, unused for audio (schemas/storage.py).
    output_url: str | None = None
    audio_url_expires_s: int = Field(default=3600, ge=1)  # lifetime of presigned audio URLs (status, HTTP)
    voice: str = DEFAULT_VOICE
    # Folders (os.pathsep-separated) whose voice folders jobs may name; no other folder is ever loaded as
    # a voice. from_env adds default_voice_dir when unset.
    voice_dirs: str = ""
    # Celery queue a producer publishes new jobs to (recorded on each job, so a re-publish goes back to it).
    queue: str = DEFAULT_QUEUE

    @model_validator(mode="before")
    @classmethod
    def _split_output_url(cls, values: Any) -> Any:
        """`output_dir` may be a URL: a remote one moves to `output_url`, `file://` becomes a path."""
        raw = values.get("output_dir") if isinstance(values, dict) else None
        if not isinstance(raw, str):
            return values
        if is_url(raw):
            return {**{k: v for k, v in values.items() if k != "output_dir"}, "output_url": raw.rstrip("/")}
        return {**values, "output_dir": local_path_of(raw)}

    @property
    def output_location(self) -> str:
        """Where audio goes: the remote URL, else the absolute local folder."""
        return self.output_url or str(self.output_dir.expanduser().resolve())

    @classmethod
    def from_env(cls, environ: Mapping[str, str], **overrides: Any) -> Self:
        """Build from `TTSFLEET_*` variables, then apply the non-None `overrides` (command-line flags).

        Raises:
            InvalidInput: a value does not parse (one line naming the setting and its variable).
        """
        values: dict[str, Any] = {}
        for name in cls.model_fields:
            env_value = environ.get(ENV_PREFIX + name.upper())
            if env_value not in (None, ""):
                values[name] = env_value
        values.update({k: v for k, v in overrides.items() if v is not None})
        values = cls._derived_defaults(values, environ)
        try:
            return cls.model_validate(values)
        except ValidationError as err:
            problem = err.errors()[0]
            name = ".".join(str(part) for part in problem["loc"]) or "settings"
            raise InvalidInput(f"invalid setting {name} ({ENV_PREFIX}{name.upper()}): {problem['msg']}, "
                               f"got {problem.get('input')!r}") from err

    @classmethod
    def _derived_defaults(cls, values: dict[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
        """Defaults that depend on other environment variables; roles with more extend this."""
        if not values.get("voice_dirs"):
            return {**values, "voice_dirs": str(default_voice_dir(environ))}
        return values

    @property
    def voice_dir_list(self) -> list[Path]:
        """`voice_dirs` as absolute folders (blanks dropped)."""
        return [Path(p).expanduser().resolve() for p in self.voice_dirs.split(os.pathsep) if p.strip()]


class ProducerSettings(Settings):
    """Settings of `submit`, `status`, `wait`, `cancel`, `stats` and `run`."""

    # Hard cap on one chunk's characters; sentences longer than this are cut at word boundaries.
    max_chunk_chars: int = Field(default=400, ge=16)
    # Texts above this many characters are refused at submit (a 3 MB book chapter fits).
    max_text_chars: int = 5_000_000
    # `gc` deletes the audio of jobs that ended longer ago than this; None keeps audio forever.
    result_ttl_s: float | None = Field(default=None, gt=0)


class WorkerSettings(Settings):
    """Settings of one worker process bound to one device."""

    device: str = "auto"  # "auto", "cpu", "cuda", "cuda:N", "mps"
    precision: Precision = Precision.AUTO
    queues: str = DEFAULT_QUEUE  # comma-separated queues this worker consumes
    worker_name: str | None = None
    lease_s: float = 120.0  # a claimed job is ours for this long after each heartbeat
    heartbeat_s: float = 15.0
    max_attempts: int = 5  # a job claimed this many times without finishing is failed as poison
    token_budget: int | None = None  # batch size cap in input tokens; None = derive from device memory
    deterministic: bool = False  # noise off: the same text gives the same audio, whatever the batching
    metrics_port: int | None = None  # serve Prometheus metrics on this port when set
    voices_cache_dir: Path | None = None  # where converted voices are cached; from_env: default_voices_cache_dir
    # Inference runtime: "auto" (onnxruntime on a CPU for voices with an ONNX model, else torch), or forced.
    runtime: Literal["auto", "torch", "onnxruntime"] = "auto"
    threads: int | None = Field(default=None, ge=1)  # intra-op threads; None = the CPU cores this process may use
    # Probe files for supervisors (Kubernetes): `ready` once the voice is loaded and its canary passed
    # (removed when stopping), `heartbeat` touched on every beat. None: no files.
    health_dir: Path | None = None
    # A job of at least twice this many characters is split into segments of about this many (3,000
    # characters: about 3 minutes of speech) that idle workers lease on their own; 0: never split.
    segment_chars: int = Field(default=3000, ge=0)
    # A short job (a notice: at most 4 chunks) is run together with up to this many minus one other queued
    # short jobs of its voice, in one engine call that fills the CPU's lanes or the GPU's batches; 1: alone.
    join_jobs: int = Field(default=32, ge=1)

    @classmethod
    def _derived_defaults(cls, values: dict[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
        values = super()._derived_defaults(values, environ)
        if values.get("voices_cache_dir") is None:
            return {**values, "voices_cache_dir": default_voices_cache_dir(environ)}
        return values

    @property
    def queue_names(self) -> list[str]:
        """`queues` as a list, blanks dropped."""
        return [q.strip() for q in self.queues.split(",") if q.strip()]


class ServiceSettings(ProducerSettings):
    """Settings of `ttsfleet serve`, the HTTP service (stateless: everything it knows is in SQL)."""

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    # API keys: always required on a non-loopback address; `require_api_keys` asks for them on loopback too.
    require_api_keys: bool = False
    api_keys_file: Path | None = None  # extra keys, one a line (`#` comments), besides those in the store
    webhook_secret: str | None = None  # HMAC-SHA256 key of every webhook; callbacks are refused without one
    max_upload_bytes: int = Field(default=10_000_000, ge=1)  # body limit of job submission (POST /v1/jobs)
    max_body_bytes: int = Field(default=1_000_000, ge=1)  # body limit of every other route
    # A client must send its request's head, and then its body, within this many seconds (408 / closed).
    client_timeout_s: float = Field(default=60.0, gt=0)
    max_queued_per_key: int = Field(default=1000, ge=1)  # queued + running jobs one API key may have
    cors_origins: str = ""  # comma-separated origins allowed cross-site; empty: CORS off
    speech_timeout_s: float = Field(default=60.0, gt=0)  # /v1/audio/speech waits this long for short input
    speech_sync_max_chars: int = Field(default=2000, ge=1)  # longer input is answered 202 with the job's URL
    webhook_poll_s: float = Field(default=1.0, gt=0)
    webhook_max_attempts: int = Field(default=8, ge=1)
    webhook_backoff_s: float = Field(default=2.0, gt=0)  # first retry after this; doubles each time
    webhook_timeout_s: float = Field(default=10.0, gt=0)  # one delivery, from resolving the name to the status
    # Networks (comma-separated CIDRs) callbacks may reach although they are not public (service/callbacks.py).
    callback_allow_networks: str = ""
    # `hf:` voices are taken over HTTP only when a worker already has them or this allows hub downloads.
    allow_hub_voices: bool = False
    # The service's local copies of results in an object store are dropped after this long unused.
    audio_cache_s: float = Field(default=3600.0, gt=0)

    @property
    def cors_origin_list(self) -> list[str]:
        return [o.strip() for o in self.cors_origins.split(",") if o.strip()]
