"""`KokoroTorchRunner`: Kokoro-82M in PyTorch (the `kokoro` package's `KModel`, with transformers' ALBERT as
its text encoder), length-batched under the card's precision policy through `worker.kokoro_batch`.

Its weights (`config.json` and a `.pth`, as hexgrad/Kokoro-82M publishes them) are not on the package index:
they are used where present, as a `Kokoro-82M` folder inside a voice directory or hexgrad/Kokoro-82M in the
local Hugging Face cache. The voices' style vectors come from the kokoro extra either way.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Generator, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from schemas.errors import PermanentError, first_line
from schemas.kokoro import KOKORO_EXTRA_HINT
from schemas.status import PrecisionMode, Runtime
from worker.device import DeviceInfo
from worker.kokoro_voice import KokoroVoice, join_pieces, split_pieces
from worker.onnx_runner import LaneItem
from worker.precision import Policy

# A precision policy names its fp32 modules after the parts of a VITS voice (and the start-up fidelity check
# keeps more of them in fp32 when the audio falls below its bar): the Kokoro stages doing the same job follow.
STAGES_FOR = {"text_encoder": ("text_encoder",), "duration_predictor": ("bert", "predictor"),
              "flow": ("prosody",), "decoder": ("decoder", "generator")}
HUB_REPO = "hexgrad/Kokoro-82M"
HUB_MODEL_FILE = "kokoro-v1_0.pth"
FOLDER_NAMES = ("Kokoro-82M", "kokoro-82m")


@dataclass(frozen=True, slots=True)
class KokoroWeights:
    """Where a PyTorch Kokoro's files are: its `config.json` and its state dict (`.pth`)."""

    config: Path
    model: Path


def find_kokoro_weights(voice_dirs: Sequence[Path]) -> KokoroWeights | None:
    """The PyTorch weights: a `Kokoro-82M` folder (config.json + one .pth) in one of `voice_dirs`, else
    hexgrad/Kokoro-82M in the local Hugging Face cache (never downloaded); None when neither is there."""
    for folder in (Path(d) / name for d in voice_dirs for name in FOLDER_NAMES):
        found = sorted(folder.glob("*.pth")) if (folder / "config.json").is_file() else []
        if found:
            return KokoroWeights(folder / "config.json", found[0])
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    config, model = (try_to_load_from_cache(HUB_REPO, name) for name in ("config.json", HUB_MODEL_FILE))
    if isinstance(config, str) and isinstance(model, str):
        return KokoroWeights(Path(config), Path(model))
    return None


def load_kokoro_model(weights: KokoroWeights) -> Any:
    """`kokoro.model.KModel` from `weights`, fp32 on the CPU, in eval mode (no hub access).

    Raises PermanentError when the `kokoro` package is missing or the files do not load."""
    try:
        from kokoro.model import KModel
    except ImportError as err:
        raise PermanentError(f"the PyTorch Kokoro model needs the kokoro package: {KOKORO_EXTRA_HINT}") from err
    try:
        config = json.loads(weights.config.read_text(encoding="utf-8"))
        model = KModel(repo_id=HUB_REPO, config=config, model=str(weights.model))
    except (OSError, ValueError, KeyError, RuntimeError, AssertionError) as err:
        raise PermanentError(f"cannot load the Kokoro weights {weights.model}: {first_line(err)}") from err
    return model.float().eval()


def fp32_stages(keep_fp32: Sequence[str]) -> list[str]:
    """The `worker.kokoro_batch.STAGES` a policy's `keep_fp32` keeps in fp32: Kokoro stage names as they are,
    VITS module names through STAGES_FOR."""
    from worker.kokoro_batch import STAGES

    named = [stage for name in keep_fp32 for stage in (STAGES_FOR.get(name) or (name,))]
    return [stage for stage in dict.fromkeys(named) if stage in STAGES]


def noise_seed(tokens: Sequence[int]) -> int:
    """The seed of a piece's noise: its ids' CRC-32, so a piece sounds the same in any batch, in any job."""
    return zlib.crc32(np.asarray(tokens, dtype=np.int64).tobytes())


class KokoroTorchRunner:
    """Kokoro's PyTorch model on its device under `policy`, batched with the masking of `worker.kokoro_batch`
    (the runner interface of `worker.model.ModelRunner`: padded batches, no lanes).

    Noise: each piece's own generator, seeded by `noise_seed` (the same audio for the same piece whatever its
    batch mates); `noise_off`: none at all, as in the int8 ONNX export. Under an autocast policy the stages
    `fp32_stages(policy.keep_fp32)` names run in fp32.
    """

    runtime = Runtime.TORCH
    padded_batches = True
    lanes = 1
    pad_id = 0

    def __init__(self, model: Any, voice: KokoroVoice, device: DeviceInfo, policy: Policy, *,
                 noise_off: bool = False, threads: int | None = None) -> None:
        import torch

        if threads is not None:
            torch.set_num_threads(threads)
        self.threads = threads
        self.model, self.voice, self.noise_off = model, voice, noise_off
        self.torch_device = device.torch_device if policy.run_on == device.backend else str(policy.run_on)
        self.device_type = self.torch_device.split(":")[0]
        model.to(self.torch_device).eval()
        self.policy = policy
        self._noiseless = False

    def set_policy(self, policy: Policy) -> None:
        """Run under `policy` from now on (the canary's fallbacks)."""
        self.policy = policy

    def run(self, ids: Sequence[Sequence[int]], *, seed: int | None = None, fp32: bool = False,
            speed: float = 1.0, speaker_id: int | None = None) -> list[np.ndarray]:
        """One float32 24 kHz wave per chunk's ids, in order: every piece of the batch in one padded forward,
        then each chunk's pieces trimmed and joined. `fp32` runs this batch with autocast off; `seed` and
        `speaker_id` have no effect (noise is seeded per piece, see the class docstring)."""
        import torch

        from worker.kokoro_batch import batched_forward

        chunks = [split_pieces(item) for item in ids]
        pieces = [piece for chunk in chunks for piece in chunk]
        styles = torch.from_numpy(np.concatenate([self.voice.style_for(len(p)) for p in pieces]))
        seeds = None if self.noise_off or self._noiseless else [noise_seed(p) for p in pieces]
        islands = fp32_stages(self.policy.keep_fp32)
        with torch.inference_mode(), self._autocast(fp32):
            waves = batched_forward(self.model, pieces, styles, speed, seeds, islands)
            flat = [w.float().cpu().numpy() for w in waves]
        del waves
        out, start = [], 0
        for chunk in chunks:
            out.append(join_pieces(flat[start: start + len(chunk)]))
            start += len(chunk)
        return out

    def stream(self, items: Sequence[LaneItem]) -> Generator[tuple[int, np.ndarray | Exception, float]]:
        """Each item alone, one after another (torch batches instead of running lanes)."""
        import time

        for pos, item in enumerate(items):
            started = time.perf_counter()
            try:
                wave: np.ndarray | Exception = self.run([item.ids], speed=item.speed)[0]
            except Exception as err:  # handed to the caller with its item, which decides
                wave = err
            yield pos, wave, time.perf_counter() - started

    @contextmanager
    def noiseless(self) -> Iterator[None]:
        """No noise while inside (the fidelity check compares audio made without it)."""
        saved, self._noiseless = self._noiseless, True
        try:
            yield
        finally:
            self._noiseless = saved

    @contextmanager
    def _autocast(self, fp32: bool) -> Iterator[None]:
        import torch

        if self.policy.mode != PrecisionMode.AUTOCAST or fp32:
            yield
            return
        with torch.autocast(self.device_type, dtype=self.policy.torch_dtype()):
            yield

    def synchronize(self) -> None:
        """Wait for queued device work, so a timer read after this is honest."""
        if self.device_type == "cuda":
            import torch

            torch.cuda.synchronize(self.torch_device)

    def is_out_of_memory(self, err: BaseException) -> bool:
        import torch

        return isinstance(err, torch.OutOfMemoryError)

    def release_memory(self) -> None:
        """Nothing beyond `worker.model.free_memory`, which empties torch's caching allocator."""
