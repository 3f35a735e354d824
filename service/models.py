"""The HTTP API's request and response bodies (pydantic), beside the CLI's own (`schemas.messages.JobView`)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.messages import JOB_ID_PATTERN, JobView
from schemas.status import AudioFormat, JobStatus, WebhookState


class JobCreate(BaseModel):
    """One job from JSON: the text and how to speak it (the fields `submit` takes as flags)."""

    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1, description="the text to speak")
    id: str | None = Field(default=None, pattern=JOB_ID_PATTERN.pattern, description="your own job id")
    title: str | None = Field(default=None, max_length=512)
    voice: str | None = Field(default=None, max_length=512, description="a voice from GET /v1/voices")
    format: AudioFormat = AudioFormat.WAV
    priority: int = Field(default=5, ge=0, le=9, description="0 (lowest) to 9 (most urgent)")
    loudness_lufs: float | None = Field(default=None, ge=-70, le=-5)
    speed: float | None = Field(default=None, ge=0.25, le=4.0, description="2.0 speaks twice as fast")
    lexicon: dict[str, str] | None = Field(default=None, description="word -> replacement text or [[ phonemes ]]")
    callback_url: str | None = Field(default=None, max_length=2048, pattern=r"^https?://[^\s]+$",
                                     description="POSTed a signed JSON body when the job ends")


class Accepted(BaseModel):
    """One job as `submit --json` prints it, plus where to follow it."""

    id: str
    status: JobStatus
    created: bool
    chunks_total: int
    url: str


class WebhookAttemptView(BaseModel):
    attempt: int
    at: str
    http_status: int | None
    error: str | None
    next_attempt_at: str | None


class WebhookView(BaseModel):
    url: str
    state: WebhookState
    attempts: list[WebhookAttemptView] = Field(default_factory=list)


class JobDetail(JobView):
    """`status --json`'s object, plus the expected finish and the job's URLs. `audio_path` is the audio's
    URL here, never a path on the server."""

    model_config = ConfigDict(frozen=True)

    eta_s: float | None = Field(default=None, description="seconds until the job should finish; "
                                                          "null until the fleet has measured throughput")
    eta_at: str | None = None
    audio_url: str | None = None
    subtitles_url: str | None = None
    manifest_url: str | None = None
    webhook: WebhookView | None = None


class SpeechRequest(BaseModel):
    """OpenAI's `audio.speech.create` body."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field(max_length=128)
    input: str = Field(min_length=1, max_length=100_000)
    voice: str = Field(max_length=512)
    response_format: Literal["wav", "flac", "mp3", "opus", "pcm", "aac"] = "mp3"
    speed: float = Field(default=1.0, ge=0.25, le=4.0)
    instructions: str | None = Field(default=None, max_length=4096)


class SpeechQueued(BaseModel):
    """202: the input was long (or took longer than the wait); fetch the audio from `audio_url` when done."""

    id: str
    status: JobStatus
    url: str
    audio_url: str


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "ttsfleet"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class Problem(BaseModel):
    """Every error: one line saying what is wrong."""

    detail: str
