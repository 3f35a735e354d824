"""One precision policy per card, decided from a device description alone (no torch, no GPU needed).

Rules (reasons in docs/precision.md):
- bf16 only at compute capability >= 8.0, with TF32 matmuls. `torch.cuda.is_bf16_supported()` is not
  consulted: it counts emulation and answers True on a T4.
- fp16 on 7.x (V100, T4, RTX 20xx), except GTX 16xx (7.5 without tensor cores: fp16 gives NaN/silence).
- fp32 on Pascal and older, on CPU, and on Apple MPS (which runs on the CPU: MPS leaks memory).
- A forced precision the card cannot run, or a torch build without kernels for the card, is refused with
  `PrecisionRefused` (one line) before any work starts.
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from schemas.errors import PrecisionRefused
from schemas.status import Backend, DType, Precision, PrecisionMode, Runtime
from worker.device import DeviceInfo

if TYPE_CHECKING:
    import torch

DTYPES = {Precision.BF16: DType.BFLOAT16, Precision.FP16: DType.FLOAT16, Precision.FP32: DType.FLOAT32}
# VITS parts run in fp32 under low precision: they decide the durations (ceil(exp(.)) turns small errors
# into shifted phoneme boundaries) and cost little next to the flow and the HiFi-GAN decoder.
VITS_FP32_MODULES = ("text_encoder", "duration_predictor")
# Every part of a VITS forward at inference, in the order they run. A mixed policy keeps more of them in
# fp32 when the fidelity check asks for it: the decoder first, then the flow (docs/precision.md).
VITS_MODULES = ("text_encoder", "duration_predictor", "flow", "decoder")
MIXED_ORDER = ("decoder", "flow")
_GTX16_RE = re.compile(r"\bGTX\s*16\d\d\b", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Policy:
    """How a worker computes.

    `mode`: FP32 (nothing lowered) or AUTOCAST (weights stay fp32; matmuls/convs run in `dtype` under
    torch.autocast; the submodules in `keep_fp32` run with autocast off). Weight casting is not used: the
    fp32 parts would need casts at every boundary, and the fp32 weights make the per-chunk fp32 redo
    free. `run_on` is the torch backend the model really runs on (CPU for MPS). `runtime`: onnxruntime on
    CPUs (the same Piper ONNX graph Piper runs, ~2.5x eager PyTorch per sentence there), torch elsewhere;
    a voice without an ONNX model runs on torch whatever this says (the engine notes it).
    """

    dtype: DType
    tf32: bool
    mode: PrecisionMode
    reason: str
    keep_fp32: tuple[str, ...] = ()
    run_on: Backend = Backend.CUDA
    requested: Precision = Precision.AUTO
    runtime: Runtime = Runtime.TORCH

    @property
    def low_precision(self) -> bool:
        return self.dtype != DType.FLOAT32

    def torch_dtype(self) -> torch.dtype:
        import torch

        return {DType.BFLOAT16: torch.bfloat16, DType.FLOAT16: torch.float16, DType.FLOAT32: torch.float32}[
            self.dtype]


def choose_policy(device: DeviceInfo, requested: Precision | str = "auto", runtime: str = "auto") -> Policy:
    """The policy for `device`, honouring a forced `requested` precision when the card can run it, and a
    forced `runtime` ("torch", "onnxruntime"; "auto": onnxruntime on a CPU when it is installed).

    Decided from the DeviceInfo fields (and whether onnxruntime is installed) only. Raises PrecisionRefused
    (one line) for a precision the card cannot run, an unknown precision or runtime name, onnxruntime on a
    GPU or when it is not installed, or a CUDA card the torch build has no kernels for.
    """
    try:
        want = Precision(str(requested).lower())
    except ValueError as err:
        raise PrecisionRefused(f"unknown precision {requested!r}: use auto, bf16, fp16 or fp32") from err
    if device.backend in (Backend.CPU, Backend.MPS):
        return _with_runtime(_host_policy(device, want), runtime)
    if str(runtime).lower() not in ("auto", Runtime.TORCH):
        raise PrecisionRefused(f"runtime {runtime!r} refused on {device.name}: GPUs run torch (batched, "
                               "under the card's precision policy)")
    if device.backend != Backend.CUDA or device.capability is None:
        raise PrecisionRefused(f"unsupported device backend {device.backend!r} for {device.name}")
    _check_arch(device)
    return _cuda_policy(device, want)


def _host_policy(device: DeviceInfo, want: Precision) -> Policy:
    if device.backend == Backend.MPS:
        why = "Apple MPS: runs on the CPU in fp32 (MPS leaks memory job after job)"
    else:
        why = "CPU: fp32 always (bf16/fp16 give no steady speed-up on CPUs and shift the timing)"
    if want in (Precision.BF16, Precision.FP16):
        raise PrecisionRefused(f"{want.value} refused on {device.name}: {why}")
    return Policy(dtype=DType.FLOAT32, tf32=False, mode=PrecisionMode.FP32, reason=why, run_on=Backend.CPU,
                  requested=want)


def onnxruntime_installed() -> bool:
    """True when the onnxruntime package can be imported (checked without importing it)."""
    return importlib.util.find_spec("onnxruntime") is not None


def _with_runtime(policy: Policy, runtime: str) -> Policy:
    """`policy` on a host CPU with its runtime chosen: onnxruntime when asked for or (auto) installed."""
    wanted = str(runtime).lower()
    if wanted not in ("auto", Runtime.TORCH, Runtime.ONNXRUNTIME):
        raise PrecisionRefused(f"unknown runtime {runtime!r}: use auto, torch or onnxruntime")
    if wanted == Runtime.TORCH:
        return policy
    if not onnxruntime_installed():
        if wanted == Runtime.ONNXRUNTIME:
            raise PrecisionRefused("runtime onnxruntime refused: the onnxruntime package is not installed")
        return replace(policy, reason=policy.reason + "; torch (onnxruntime is not installed)")
    return replace(policy, runtime=Runtime.ONNXRUNTIME,
                   reason=policy.reason + "; onnxruntime for voices with an ONNX model (faster than eager "
                   "PyTorch on CPUs)")


def _cuda_policy(device: DeviceInfo, want: Precision) -> Policy:
    assert device.capability is not None
    cap, cap_s, name = device.capability, device.capability_str, device.name
    ampere = cap >= (8, 0)
    gtx16 = bool(_GTX16_RE.search(name))
    if want == Precision.BF16 and not ampere:
        raise PrecisionRefused(f"bf16 refused on {name} (compute capability {cap_s}): bf16 needs >= 8.0")
    if want == Precision.FP16 and gtx16:
        raise PrecisionRefused(f"fp16 refused on {name}: GTX 16xx cards give NaN or silent audio in fp16")
    if want == Precision.FP16 and cap < (6, 0):
        raise PrecisionRefused(f"fp16 refused on {name} (compute capability {cap_s}): needs >= 6.0")
    if want == Precision.FP32:
        return Policy(dtype=DType.FLOAT32, tf32=False, mode=PrecisionMode.FP32, requested=want,
                      reason=f"fp32 as requested on {name} ({cap_s}); TF32 off so fp32 means full fp32")
    if want == Precision.BF16 or (want == Precision.AUTO and ampere):
        return _low(DType.BFLOAT16, True, want,
                    f"compute capability {cap_s} >= 8.0: native bf16 and TF32 tensor cores")
    if want == Precision.FP16:
        return _low(DType.FLOAT16, ampere, want,
                    f"fp16 as requested on {name} ({cap_s}), guarded by a NaN/silence check")
    return _auto_below_ampere(device, gtx16)


def _low(dtype: DType, tf32: bool, want: Precision, reason: str) -> Policy:
    return Policy(dtype=dtype, tf32=tf32, mode=PrecisionMode.AUTOCAST, reason=reason, keep_fp32=VITS_FP32_MODULES,
                  requested=want)


def _auto_below_ampere(device: DeviceInfo, gtx16: bool) -> Policy:
    assert device.capability is not None
    cap, cap_s = device.capability, device.capability_str
    if gtx16:
        why = f"GTX 16xx ({cap_s}, Turing without tensor cores): fp16 gives NaN or silent audio there"
    elif cap >= (7, 0):
        return _low(DType.FLOAT16, False, Precision.AUTO,
                    f"compute capability {cap_s}: fp16 tensor cores; bf16 needs >= 8.0")
    elif cap >= (6, 1):
        why = f"Pascal ({cap_s}): no bf16, and fp16 runs at 1/64 of the fp32 rate (P40, GTX 10xx); fp32"
    elif cap >= (6, 0):
        why = (f"Pascal ({cap_s}): no bf16 and no tensor cores; fp16 gains little on conv-heavy VITS "
               "and risks overflow, so fp32")
    else:
        why = f"compute capability {cap_s}: no usable fp16 or bf16"
    return Policy(dtype=DType.FLOAT32, tf32=False, mode=PrecisionMode.FP32, reason=why)


def _check_arch(device: DeviceInfo) -> None:
    """Refuse a torch build with no kernels for this card (an sm_120 card on an older build gives noise)."""
    if device.arch_list is None or device.capability is None:
        return
    if not arch_supported(device.capability, device.arch_list):
        built = " ".join(device.arch_list) or "none (CPU-only build)"
        raise PrecisionRefused(f"this torch build has no kernels for {device.name} "
                               f"(sm_{device.capability[0]}{device.capability[1]}); built for: {built}")


def arch_supported(capability: tuple[int, int], arch_list: tuple[str, ...] | list[str]) -> bool:
    """True when `arch_list` (torch.cuda.get_arch_list()) can run on `capability`: an sm_XY cubin runs on
    the same major at minor >= Y; compute_XY PTX is JIT-compiled for any capability >= X.Y; arch-specific
    "a"/"f" variants run only on their exact capability."""
    for arch in arch_list:
        match = re.fullmatch(r"(sm|compute)_(\d+)(\d)([af]?)", arch)
        if match is None:
            continue
        kind, major, minor, suffix = match[1], int(match[2]), int(match[3]), match[4]
        if suffix:
            if (major, minor) == capability:
                return True
        elif kind == "compute" and (major, minor) <= capability:
            return True
        elif kind == "sm" and major == capability[0] and minor <= capability[1]:
            return True
    return False


def autocast_policy(device: DeviceInfo, precision: Precision | str,
                    keep_fp32: tuple[str, ...] = VITS_FP32_MODULES) -> Policy:
    """`precision` under torch autocast on `device` whatever the card could run, the modules in `keep_fp32`
    in fp32: what a card's policy computes, emulated (slowly) on a CPU. For measuring fidelity only
    (`doctor --fidelity`, benchmarks), never a worker's policy. Raises PrecisionRefused for an unknown
    precision name; fp32 (and auto on a CPU) is plain fp32."""
    try:
        want = Precision(str(precision).lower())
    except ValueError as err:
        raise PrecisionRefused(f"unknown precision {precision!r}: use auto, bf16, fp16 or fp32") from err
    run_on = Backend.CPU if device.backend in (Backend.CPU, Backend.MPS) else Backend.CUDA
    if want in (Precision.FP32, Precision.AUTO):
        return Policy(dtype=DType.FLOAT32, tf32=False, mode=PrecisionMode.FP32, run_on=run_on, requested=want,
                      reason=f"fp32 on {device.name} (the reference)")
    return Policy(dtype=DTYPES[want], tf32=False, mode=PrecisionMode.AUTOCAST, keep_fp32=keep_fp32, run_on=run_on,
                  requested=want, reason=f"{want.value} under torch autocast on {device.name}, for measurement")


def with_fp32(policy: Policy, modules: tuple[str, ...], why: str) -> Policy:
    """`policy` with `modules` also kept in fp32 (a mixed policy), `why` added to its reason."""
    keep = tuple(dict.fromkeys((*policy.keep_fp32, *modules)))
    return replace(policy, keep_fp32=keep, reason=f"{policy.reason}; {why}")


def safer(policy: Policy) -> Policy | None:
    """The next safer policy for a fallback: low precision -> fp32 (TF32 kept) -> fp32 without TF32 ->
    None (nothing safer exists)."""
    if policy.low_precision:
        tf32 = " with TF32" if policy.tf32 else ""
        return replace(policy, dtype=DType.FLOAT32, mode=PrecisionMode.FP32, keep_fp32=(),
                       reason=f"fp32{tf32} after {policy.dtype} failed a check")
    if policy.tf32:
        return replace(policy, tf32=False, reason="fp32 without TF32 after fp32 with TF32 failed a check")
    return None


def apply_process_settings(policy: Policy, device: DeviceInfo) -> None:
    """Process-wide torch settings for `policy`: TF32 matmuls ("high") or full fp32 ("highest"), cuDNN
    TF32 convolutions to match, and cudnn.benchmark off (it re-tunes on every new input length).
    Does nothing (and imports nothing) for an onnxruntime policy."""
    if policy.runtime == Runtime.ONNXRUNTIME:
        return
    import torch

    torch.set_float32_matmul_precision("high" if policy.tf32 else "highest")
    torch.backends.cudnn.benchmark = False
    if device.backend == Backend.CUDA and policy.run_on == Backend.CUDA:
        torch.backends.cudnn.allow_tf32 = policy.tf32


def resolve(device_spec: str = "auto", precision: Precision | str = "auto",
            simulate: str | None = None, runtime: str = "auto") -> tuple[DeviceInfo, Policy]:
    """The device (simulated when `simulate` is given) and its policy, as `worker` and `doctor` both
    decide them. Raises InvalidInput for a bad device spec, PrecisionRefused as `choose_policy`."""
    from worker.device import detect_device, parse_simulated

    device = parse_simulated(simulate) if simulate else detect_device(device_spec)
    return device, choose_policy(device, precision, runtime)


def describe(device: DeviceInfo, policy: Policy) -> dict[str, Any]:
    """The `doctor --json` object: device, name, capability, memory_gb, dtype, tf32, reason, and more."""
    return {
        "device": device.torch_device, "name": device.name, "capability": device.capability_str,
        "memory_gb": device.memory_gb, "dtype": policy.dtype, "tf32": policy.tf32, "reason": policy.reason,
        "backend": device.backend, "runs_on": policy.run_on, "mode": policy.mode,
        "keep_fp32": list(policy.keep_fp32), "requested": policy.requested, "simulated": device.simulated,
        "runtime": policy.runtime,
        "torch_arch_list": None if device.arch_list is None else list(device.arch_list),
    }
