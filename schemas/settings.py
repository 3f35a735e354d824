"""Typed settings, one object per process role, built once from flags and environment and passed down.

Every field `x` is read from the environment variable `TTSFLEET_X`; a flag given on the command line wins.
Nothing here reads the environment at import time.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from schemas.errors import InvalidInput
from schemas.status import Precision

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
    voice: str = DEFAULT_VOICE
    # Folders (os.pathsep-separated) whose voice folders jobs may name; no other folder is ever loaded as
    # a voice. from_env adds default_voice_dir when unset.
    voice_dirs: str = ""
    # Celery queue a producer publishes new jobs to (recorded on each job, so a re-publish goes back to it).
    queue: str = DEFAULT_QUEUE

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
    # A job of at least twice this many characters is split into segments of about this many (3,000
    # characters: about 3 minutes of speech) that idle workers lease on their own; 0: never split.
    segment_chars: int = Field(default=3000, ge=0)

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
