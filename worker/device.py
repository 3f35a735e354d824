"""What device a worker runs on: a real one found through torch, or one described on the command line.

`DeviceInfo` is a plain value so the precision policy can be decided (and tested) without a GPU.
torch is imported only inside `detect_device`, and not even there for "cpu", nor for "auto" on a machine
with no GPU device files (no /dev/nvidia*, /dev/kfd, not macOS): a CPU worker need not pay torch's import.
"""

from __future__ import annotations

import os
import platform
import re
from dataclasses import dataclass
from pathlib import Path

from schemas.errors import InvalidInput
from schemas.status import Backend

_GIB = 1024**3
_SIMULATED_RE = re.compile(r"^(?P<name>.+):(?P<cap>[^:]*):(?P<mem>[^:]+)$")
_CAP_RE = re.compile(r"^(?P<major>\d+)\.(?P<minor>\d+)$")


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """One device as the precision policy sees it.

    `capability` is the CUDA compute capability (None off CUDA); `memory_bytes` the card's total memory
    (host RAM for cpu/mps; None when unknown); `arch_list` the CUDA architectures the installed torch
    build has kernels for (None when not checked, e.g. a simulated card).
    """

    backend: Backend
    name: str
    capability: tuple[int, int] | None
    memory_bytes: int | None
    index: int | None
    torch_device: str  # "cuda:0", "cpu", "mps"
    simulated: bool = False
    arch_list: tuple[str, ...] | None = None

    @property
    def capability_str(self) -> str | None:
        """"8.9", or None off CUDA."""
        return None if self.capability is None else f"{self.capability[0]}.{self.capability[1]}"

    @property
    def memory_gb(self) -> float | None:
        """Total memory in GiB, rounded to 0.1."""
        return None if self.memory_bytes is None else round(self.memory_bytes / _GIB, 1)


def parse_simulated(text: str) -> DeviceInfo:
    """Describe a card that is not here: "NAME:MAJOR.MINOR:MEMORY_GB", e.g. "Tesla T4:7.5:16".

    NAME may contain spaces. NAME "cpu" or "mps" (any case; the capability may then be left empty, as in
    "cpu::32") describes those backends; a bare "cpu" or "mps" is accepted too.
    Raises InvalidInput with a one-line message on bad syntax.
    """
    raw = text.strip()
    if raw.lower() in ("cpu", "mps"):
        raw = f"{raw}::0"
    match = _SIMULATED_RE.match(raw)
    if match is None:
        raise InvalidInput(f"--simulate {text!r}: expected NAME:MAJOR.MINOR:MEMORY_GB like 'Tesla T4:7.5:16'")
    name = match["name"].strip()
    backend = Backend(name.lower()) if name.lower() in ("cpu", "mps") else Backend.CUDA
    try:
        memory_gb = float(match["mem"])
    except ValueError as err:
        raise InvalidInput(f"--simulate {text!r}: MEMORY_GB must be a number, got {match['mem']!r}") from err
    if memory_gb < 0:
        raise InvalidInput(f"--simulate {text!r}: MEMORY_GB must not be negative")
    memory_bytes = int(memory_gb * _GIB) if memory_gb > 0 else None
    cap_text = match["cap"].strip()
    if backend != Backend.CUDA:
        if cap_text not in ("", "-"):
            raise InvalidInput(f"--simulate {text!r}: {name} has no compute capability; leave it empty")
        return DeviceInfo(backend=backend, name=name, capability=None, memory_bytes=memory_bytes,
                          index=None, torch_device=backend, simulated=True)
    cap = _CAP_RE.match(cap_text)
    if cap is None:
        raise InvalidInput(f"--simulate {text!r}: compute capability must look like 7.5, got {cap_text!r}")
    return DeviceInfo(backend=Backend.CUDA, name=name, capability=(int(cap["major"]), int(cap["minor"])),
                      memory_bytes=memory_bytes, index=0, torch_device="cuda:0", simulated=True)


def detect_device(spec: str = "auto") -> DeviceInfo:
    """Find the device named by `spec`: "auto" (first CUDA card, else MPS, else CPU), "cpu", "cuda",
    "cuda:N" or "mps". Raises InvalidInput when the named device is absent or the spec is malformed."""
    wanted = spec.strip().lower()
    if wanted == "cpu" or (wanted == "auto" and not _gpu_possible()):
        return _cpu_device()
    import torch

    if wanted == "auto":
        if torch.cuda.is_available():
            return _cuda_device(0)
        if _mps_available():
            return _mps_device()
        return _cpu_device()
    if wanted == "cpu":
        return _cpu_device()
    if wanted == "mps":
        if not _mps_available():
            raise InvalidInput("--device mps: Apple MPS is not available on this machine")
        return _mps_device()
    match = re.fullmatch(r"cuda(?::(\d+))?", wanted)
    if match is None:
        raise InvalidInput(f"--device {spec!r}: expected auto, cpu, cuda, cuda:N or mps")
    index = int(match[1] or 0)
    if not torch.cuda.is_available():
        raise InvalidInput(f"--device {spec}: no CUDA device is available (torch {torch.__version__})")
    if index >= torch.cuda.device_count():
        raise InvalidInput(f"--device {spec}: only {torch.cuda.device_count()} CUDA device(s) visible")
    return _cuda_device(index)


def _gpu_possible() -> bool:
    """False when this machine certainly has no CUDA/ROCm/MPS device: Linux without /dev/nvidia* or /dev/kfd
    device files. Cheap (no torch import); anything else answers True and lets torch decide."""
    if platform.system() != "Linux":
        return True
    dev = Path("/dev")
    return (dev / "kfd").exists() or any(dev.glob("nvidia[0-9]*"))


def _cuda_device(index: int) -> DeviceInfo:
    import torch

    props = torch.cuda.get_device_properties(index)
    return DeviceInfo(backend=Backend.CUDA, name=str(props.name), capability=(int(props.major), int(props.minor)),
                      memory_bytes=int(props.total_memory), index=index, torch_device=f"cuda:{index}",
                      arch_list=tuple(torch.cuda.get_arch_list()))


def _mps_available() -> bool:
    import torch

    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def _mps_device() -> DeviceInfo:
    return DeviceInfo(backend=Backend.MPS, name="Apple MPS", capability=None, memory_bytes=_host_memory_bytes(),
                      index=None, torch_device="mps")


def _cpu_device() -> DeviceInfo:
    return DeviceInfo(backend=Backend.CPU, name=_cpu_name(), capability=None, memory_bytes=_host_memory_bytes(),
                      index=None, torch_device="cpu")


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return f"CPU ({line.split(':', 1)[1].strip()})"
    except OSError:
        pass
    return f"CPU ({platform.processor() or platform.machine() or 'unknown'})"


def _host_memory_bytes() -> int | None:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None
