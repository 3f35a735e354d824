"""Which runner runs a voice: its ONNX model on ONNX Runtime or its model in PyTorch (a VITS voice), the
int8 Kokoro graph or Kokoro-82M batched in PyTorch (a Kokoro voice), as the policy asks and the voice
allows. The one place that knows every runner, so the runners' own modules import none of each other.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from schemas.errors import PermanentError
from schemas.status import Backend, DType, PrecisionMode, Runtime
from worker.device import DeviceInfo
from worker.kokoro_onnx import KokoroOnnxRunner
from worker.loaded_voice import LoadedVoice
from worker.onnx_runner import OnnxRunner
from worker.precision import Policy
from worker.runner import Runner


def make_runner(voice: LoadedVoice, device: DeviceInfo, policy: Policy, *, noise_off: bool = False,
                threads: int | None = None) -> Runner:
    """The runner for `voice` under `policy`. An onnxruntime policy runs a voice that has no ONNX model
    (anything but a bundled Piper voice) on torch instead; the runner's policy then says so in its reason.
    A Kokoro voice's runner is `make_kokoro_runner`'s.

    Raises PermanentError when the voice was loaded without a torch model but must run on torch.
    """
    from worker.model import ModelRunner

    if voice.kokoro is not None:
        return make_kokoro_runner(voice, device, policy, noise_off=noise_off, threads=threads)
    if policy.runtime == Runtime.ONNXRUNTIME and voice.onnx is not None:
        return OnnxRunner(voice.onnx, device, policy, noise_off=noise_off, threads=threads)
    if policy.runtime == Runtime.ONNXRUNTIME:
        policy = replace(policy, runtime=Runtime.TORCH,
                         reason=f"{policy.reason}; voice {voice.name} has no ONNX model: torch")
    if voice.model is None:
        raise PermanentError(f"voice {voice.name} was loaded for onnxruntime only; it has no torch model")
    return ModelRunner(voice.model, device, policy, noise_off=noise_off, threads=threads)


def with_kokoro_weights(loaded: LoadedVoice, voice_dirs: Sequence[Path]) -> LoadedVoice:
    """A Kokoro voice with the PyTorch Kokoro model where its weights are present (a `Kokoro-82M` folder in
    a voice directory, or hexgrad/Kokoro-82M in the Hugging Face cache); as it was without them, and the
    engine runs the ONNX model on the CPU instead."""
    from worker.kokoro_torch import find_kokoro_weights, load_kokoro_model

    weights = find_kokoro_weights(voice_dirs)
    return replace(loaded, model=load_kokoro_model(weights)) if weights is not None else loaded


def make_kokoro_runner(voice: LoadedVoice, device: DeviceInfo, policy: Policy, *, noise_off: bool = False,
                       threads: int | None = None) -> Runner:
    """The runner for a Kokoro voice: the PyTorch model, length-batched under `policy`, when the policy runs
    torch and the weights were loaded; otherwise the int8 ONNX model on ONNX Runtime on this host's CPU,
    whose policy then says so in its reason (a GPU worker without the weights still speaks Kokoro, slowly).
    """
    assert voice.kokoro is not None
    if policy.runtime == Runtime.TORCH and voice.model is not None:
        from worker.kokoro_torch import KokoroTorchRunner

        return KokoroTorchRunner(voice.model, voice.kokoro, device, policy, noise_off=noise_off, threads=threads)
    if policy.runtime != Runtime.ONNXRUNTIME:
        why = "no PyTorch Kokoro weights here (docs/voices.md)" if voice.model is None else "torch not chosen"
        policy = replace(policy, dtype=DType.FLOAT32, tf32=False, mode=PrecisionMode.FP32, keep_fp32=(),
                         run_on=Backend.CPU, runtime=Runtime.ONNXRUNTIME,
                         reason=f"{policy.reason}; {voice.name}: {why}, so its int8 ONNX model on the CPU")
    return KokoroOnnxRunner(voice.kokoro, device, policy, threads=threads)
