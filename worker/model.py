"""Running a VITS model under a precision policy, and the device-memory bookkeeping around it.

Only the `VitsModel` forward interface is relied on (input_ids, attention_mask -> waveform,
sequence_lengths), plus the `noise_scale` / `noise_scale_duration` instance attributes, so subclasses
with other decoder blocks (Piper voices) run unchanged.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
import re
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

from schemas.status import PrecisionMode, Runtime
from worker.device import DeviceInfo
from worker.precision import Policy
from worker.runner import LaneItem


class ModelRunner:
    """A model moved to its device, with the policy's autocast and fp32 islands installed (a `Runner`).

    `run()` returns one float32 numpy array per item, cut to that item's `sequence_lengths` (the padded
    tail of a VITS batch is not silent: the decoder ignores the mask). The wrapped model is mutated
    (moved, submodule forwards wrapped, noise attributes set); `restore()` undoes all but the move.
    `threads`, when given, sets torch's intra-op threads (process-wide).
    """

    runtime = Runtime.TORCH
    padded_batches = True  # a batch is padded to its longest item and cut back to each item's length
    lanes = 1  # one batch at a time: the device parallelizes within it

    def __init__(self, model: Any, device: DeviceInfo, policy: Policy, *, noise_off: bool = False,
                 threads: int | None = None) -> None:
        if threads is not None:
            import torch

            torch.set_num_threads(threads)
        self.threads = threads
        self.model = model
        self.torch_device = device.torch_device if policy.run_on == device.backend else str(policy.run_on)
        self.device_type = self.torch_device.split(":")[0]
        pad = getattr(model.config, "pad_token_id", None)
        self.pad_id = int(pad) if pad is not None else 0
        self._saved_noise = (model.noise_scale, model.noise_scale_duration)
        self._wrapped: dict[str, Callable[..., Any]] = {}
        model.to(self.torch_device).eval()
        if noise_off:
            model.noise_scale, model.noise_scale_duration = 0.0, 0.0
        self.policy = policy
        self.set_policy(policy)

    def set_policy(self, policy: Policy) -> None:
        """Switch to `policy` (used by the canary fallback): re-install the fp32 islands."""
        self._unwrap()
        self.policy = policy
        if policy.mode == PrecisionMode.AUTOCAST:
            for name in policy.keep_fp32:
                module = getattr(self.model, name, None)
                if module is not None:
                    self._wrapped[name] = module.forward
                    module.forward = _fp32_island(module.forward, self.device_type)

    def run(self, ids: Sequence[Sequence[int]], *, seed: int | None = None,
            fp32: bool = False, speed: float = 1.0, speaker_id: int | None = None) -> list[np.ndarray]:
        """Synthesize a batch of token-id lists; `seed` seeds the global torch RNG the VITS noise comes
        from; `fp32` runs this batch with autocast off; `speed` multiplies the model's speaking rate (its
        length scale is divided by it); `speaker_id` picks the speaker of a multi-speaker model (one per
        batch; None means speaker 0, as in Piper and its ONNX `sid`, never the unconditioned model, which a
        multi-speaker voice was not trained to be). Returns float32 arrays, one per item, trimmed.
        Raises whatever the model raises (torch.OutOfMemoryError included; ValueError for a speaker id
        outside the model's)."""
        import torch

        input_ids, attention_mask = self._tensors(ids)
        with torch.inference_mode(), self._autocast(fp32):
            if seed is not None:
                torch.manual_seed(seed)
            rate = float(getattr(self.model, "speaking_rate", 1.0)) * speed
            if speaker_id is None and int(getattr(self.model.config, "num_speakers", 1)) > 1:
                speaker_id = 0
            speaker = {"speaker_id": speaker_id} if speaker_id is not None else {}
            out = self.model(input_ids=input_ids, attention_mask=attention_mask, speaking_rate=rate, **speaker)
            lengths = [int(n) for n in out.sequence_lengths.tolist()]
            waveform = out.waveform.float().cpu().numpy()
        del out, input_ids, attention_mask
        # Copies, so no item keeps the padded batch array alive.
        return [np.array(waveform[i, :n], dtype=np.float32) for i, n in enumerate(lengths)]

    def stream(self, items: Sequence[LaneItem]) -> Generator[tuple[int, np.ndarray | Exception, float]]:
        """Each item alone, one after another (torch has no lanes: the engine batches instead); an item's
        error is yielded in place of its wave, as `OnnxRunner.stream` does."""
        for pos, item in enumerate(items):
            started = time.perf_counter()
            try:
                wave: np.ndarray | Exception = self.run([item.ids], speed=item.speed, speaker_id=item.speaker_id)[0]
            except Exception as err:  # handed to the caller with its item, which decides
                wave = err
            yield pos, wave, time.perf_counter() - started

    def release_memory(self) -> None:
        """Nothing beyond `free_memory`, which empties torch's caching allocator."""

    @contextmanager
    def noiseless(self) -> Iterator[None]:
        """The model's noise scales at 0 while inside (as `noise_off` sets them for good)."""
        saved = (self.model.noise_scale, self.model.noise_scale_duration)
        self.model.noise_scale, self.model.noise_scale_duration = 0.0, 0.0
        try:
            yield
        finally:
            self.model.noise_scale, self.model.noise_scale_duration = saved

    def is_out_of_memory(self, err: BaseException) -> bool:
        """True when `err` is torch's out-of-memory error."""
        import torch

        return isinstance(err, torch.OutOfMemoryError)

    def synchronize(self) -> None:
        """Wait for queued device work, so a timer read after this is honest."""
        if self.device_type == "cuda":
            import torch

            torch.cuda.synchronize(self.torch_device)

    def restore(self) -> None:
        """Undo the wrappers and the noise setting (the model stays on its device)."""
        self._unwrap()
        self.model.noise_scale, self.model.noise_scale_duration = self._saved_noise

    def _unwrap(self) -> None:
        for name, forward in self._wrapped.items():
            getattr(self.model, name).forward = forward
        self._wrapped.clear()

    def _tensors(self, ids: Sequence[Sequence[int]]) -> tuple[Any, Any]:
        import torch

        width = max(len(item) for item in ids)
        input_ids = torch.full((len(ids), width), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(ids), width), dtype=torch.long)
        for row, item in enumerate(ids):
            input_ids[row, : len(item)] = torch.tensor(item, dtype=torch.long)
            attention_mask[row, : len(item)] = 1
        return input_ids.to(self.torch_device), attention_mask.to(self.torch_device)

    @contextmanager
    def _autocast(self, fp32: bool) -> Iterator[None]:
        import torch

        enabled = self.policy.mode == PrecisionMode.AUTOCAST and not fp32
        if not enabled:
            yield
            return
        with torch.autocast(self.device_type, dtype=self.policy.torch_dtype()):
            yield


def _fp32_island(forward: Callable[..., Any], device_type: str) -> Callable[..., Any]:
    """`forward` run with autocast off and its floating inputs in fp32."""
    import torch

    def to_fp32(value: Any) -> Any:
        if isinstance(value, torch.Tensor) and value.is_floating_point() and value.dtype != torch.float32:
            return value.float()
        return value

    @functools.wraps(forward)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with torch.autocast(device_type, enabled=False):
            return forward(*(to_fp32(a) for a in args), **{k: to_fp32(v) for k, v in kwargs.items()})

    return wrapper


def bad_audio(samples: np.ndarray, silence_rms: float = 1e-4) -> str | None:
    """Why `samples` is unusable ("NaN/inf in output", "silent output"), or None when it is fine."""
    if samples.size == 0:
        return "empty output"
    if not np.isfinite(samples).all():
        return "NaN/inf in output"
    if float(np.sqrt(np.mean(np.square(samples, dtype=np.float64)))) < silence_rms:
        return "silent output"
    return None


# --- device memory -----------------------------------------------------------------------------------

def reset_peak(torch_device: str) -> None:
    """Start a fresh peak: CUDA peak statistics, or the process's RSS high-water mark on Linux."""
    if torch_device.startswith("cuda"):
        import torch

        torch.cuda.reset_peak_memory_stats(torch_device)
        return
    try:  # writing 5 to clear_refs resets VmHWM (Linux >= 4.0)
        with open("/proc/self/clear_refs", "w", encoding="ascii") as refs:
            refs.write("5")
    except OSError:
        pass


def peak_bytes(torch_device: str) -> int | None:
    """Peak since `reset_peak`: CUDA max allocated bytes, or on CPU the peak resident set size of the whole
    process (VmHWM; model and Python included); None where neither can be read."""
    if torch_device.startswith("cuda"):
        import torch

        return int(torch.cuda.max_memory_allocated(torch_device))
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            match = re.search(r"^VmHWM:\s+(\d+) kB", status.read(), re.MULTILINE)
    except OSError:
        return None
    return int(match[1]) * 1024 if match else None


def free_memory(torch_device: str) -> None:
    """Return freed memory: collect cycles, empty the CUDA cache, and on glibc give the heap's free pages
    back to the system. The caller must have dropped its references (and left any except block) first."""
    gc.collect()
    if torch_device.startswith("cuda"):
        import torch

        torch.cuda.empty_cache()
    elif (trim := _malloc_trim()) is not None:
        trim(0)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        return libc.malloc_trim if libc is not None else None
    except (OSError, AttributeError):
        return None
