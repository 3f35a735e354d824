"""What runs a voice's model for the engine: the `Runner` protocol, satisfied by `worker.model.ModelRunner`
(PyTorch: padded batches under the precision policy) and `worker.onnx_runner.OnnxRunner` (ONNX Runtime on
a CPU: one item per graph call, several side by side on lanes).

The engine asks the runner what it needs to know (does it pad batches, how many lanes, how to give memory
back) instead of testing which class it holds. Imports numpy only.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

from schemas.status import Runtime

if TYPE_CHECKING:
    from worker.precision import Policy


@dataclass(frozen=True, slots=True)
class LaneItem:
    """One item for `Runner.stream`: token ids, speed factor (2.0: half as long), speaker (None: 0)."""

    ids: Sequence[int]
    speed: float = 1.0
    speaker_id: int | None = None


class Runner(Protocol):
    """A model on its device, run under `policy` (the policy it really runs: `set_policy` changes it).

    `padded_batches`: True when several items of one `run` call are padded to the longest and run as one
    batch (torch), so a token budget bounds a batch; False when each item runs on its own (ONNX Runtime),
    up to `lanes` of them side by side through `stream`. `torch_device` is where memory is counted
    ("cuda:0", "cpu"), `device_type` its kind; `pad_id` the token a padded or empty input is made of;
    `threads` the intra-op threads given (None: the runtime's default).
    """

    @property
    def runtime(self) -> Runtime: ...

    @property
    def policy(self) -> Policy: ...

    @property
    def torch_device(self) -> str: ...

    @property
    def device_type(self) -> str: ...

    @property
    def pad_id(self) -> int: ...

    @property
    def lanes(self) -> int: ...

    @property
    def padded_batches(self) -> bool: ...

    @property
    def threads(self) -> int | None: ...

    def set_policy(self, policy: Policy) -> None:
        """Run under `policy` from now on (the canary's fallbacks, a mixed policy)."""
        ...

    def run(self, ids: Sequence[Sequence[int]], *, seed: int | None = None, fp32: bool = False,
            speed: float = 1.0, speaker_id: int | None = None) -> list[np.ndarray]:
        """One float32 wave per token-id list, in order; `fp32` runs with low precision off."""
        ...

    def stream(self, items: Sequence[LaneItem]) -> Generator[tuple[int, np.ndarray | Exception, float]]:
        """(position in `items`, wave or the item's error, seconds) as each item finishes, in any order."""
        ...

    def noiseless(self) -> AbstractContextManager[None]:
        """Noise off while inside (the fidelity measure compares audio made without noise)."""
        ...

    def synchronize(self) -> None:
        """Wait for queued device work, so a timer read after it is honest."""
        ...

    def is_out_of_memory(self, err: BaseException) -> bool:
        """True when `err` is the runtime's out-of-memory error."""
        ...

    def release_memory(self) -> None:
        """Give back what the runtime itself keeps beyond the process-wide `free_memory` (ONNX Runtime's
        arenas); nothing for torch, whose caching allocator `free_memory` empties."""
        ...
