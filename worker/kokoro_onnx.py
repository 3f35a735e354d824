"""`KokoroOnnxRunner`: a Kokoro voice's int8 ONNX model on ONNX Runtime (the CPU runtime), through lanes as
Piper voices run (`worker.onnx_runner`): the graph takes one item per call (its token input has batch 1 and
its audio output no length), so several chunks run side by side, one per lane, each lane a thread calling a
one-thread session, and a lone chunk gets every core. Imports neither torch nor transformers.

The graph has no noise source: its audio is a function of the ids, the style vector and the speed alone,
so `seed` has nothing to seed and the audio is reproducible whatever the lanes or threads (bit for bit here).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from typing import Any, TypeVar

import numpy as np

from schemas.errors import PermanentError, first_line
from schemas.kokoro import KOKORO_EXTRA_HINT
from schemas.status import Runtime
from worker.device import DeviceInfo
from worker.kokoro_voice import KokoroVoice, join_pieces, split_pieces
from worker.onnx_runner import LaneItem, cores_available
from worker.precision import Policy

T = TypeVar("T")


class KokoroOnnxRunner:
    """Kokoro's ONNX model with the runner interface of `worker.onnx_runner.OnnxRunner` (`run`, `stream`,
    `release_memory`, ...). `threads`: intra-op threads of the all-core session (None: every core given to
    the process); `lanes`: chunks run side by side by `stream` and `run` (None: as many as threads).
    Raises PermanentError when onnxruntime is missing or the model cannot be loaded."""

    runtime = Runtime.ONNXRUNTIME
    torch_device = "cpu"
    device_type = "cpu"
    padded_batches = False  # one item per graph call: lanes, not padded batches
    pad_id = 0  # Kokoro's boundary token; a chunk of nothing but it says nothing

    def __init__(self, voice: KokoroVoice, device: DeviceInfo, policy: Policy, *, threads: int | None = None,
                 lanes: int | None = None) -> None:
        try:
            import onnxruntime
        except ImportError as err:
            raise PermanentError(f"Kokoro voices on CPUs need onnxruntime: {KOKORO_EXTRA_HINT}") from err
        self._onnxruntime = onnxruntime
        self.voice, self.device, self.policy = voice, device, policy
        self.threads: int | None = threads or cores_available()
        self.lanes = max(1, lanes or self.threads or 1)
        self.session = self._load(self.threads or 1)
        self._lane_session: Any = None  # loaded at the first call with several items
        self._pool = ThreadPoolExecutor(self.lanes, thread_name_prefix="ttsfleet-kokoro") if self.lanes > 1 else None
        self._grown: set[int] = set()  # ids of the sessions that ran since `release_memory`

    def set_policy(self, policy: Policy) -> None:
        """Record `policy` (a CPU policy: fp32 whatever the fallback; the int8 graph is what it is)."""
        self.policy = policy

    def run(self, ids: Sequence[Sequence[int]], *, seed: int | None = None, fp32: bool = False,
            speed: float = 1.0, speaker_id: int | None = None) -> list[np.ndarray]:
        """One float32 24 kHz wave per chunk's ids, in order, up to `lanes` at once. `speed` is the graph's
        speed input (2.0: half as long); `seed`, `fp32` and `speaker_id` have no effect (no noise, one
        precision, one speaker per voice)."""
        if len(ids) > 1 and self._pool is not None:
            lane = self._lanes_session()
            return list(self._pool.map(lambda item: self._chunk(lane, item, speed), ids))
        return [self._chunk(self.session, item, speed) for item in ids]

    def stream(self, items: Sequence[LaneItem]) -> Generator[tuple[int, np.ndarray | Exception, float]]:
        """Synthesize `items` side by side on the lanes, yielding (position, wave or the item's error, lane
        seconds) as each finishes (see `OnnxRunner.stream`). Needs `lanes` > 1."""
        if self._pool is None:
            raise ValueError("stream needs a runner with lanes > 1")
        lane = self._lanes_session()
        yield from lane_stream(self._pool, self.lanes, lambda item: self._chunk(lane, item.ids, item.speed), items)

    def _chunk(self, session: Any, ids: Sequence[int], speed: float) -> np.ndarray:
        """One chunk: each piece through the graph, the pieces trimmed and joined as the package joins them."""
        self._grown.add(id(session))
        speed_in = np.asarray([speed], dtype=np.float32)
        waves = [_infer(session, piece, self.voice.style_for(len(piece)), speed_in) for piece in split_pieces(ids)]
        return join_pieces(waves)

    def _load(self, threads: int) -> Any:
        options = self._onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = self._onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3
        try:
            return self._onnxruntime.InferenceSession(str(self.voice.model_path), options,
                                                      providers=["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime raises its own exception types (Fail, InvalidGraph, ...)
            raise PermanentError(f"cannot load the Kokoro model {self.voice.model_path}: {first_line(err)}") from err

    def _lanes_session(self) -> Any:
        if self._lane_session is None:
            self._lane_session = self._load(1)
        return self._lane_session

    def release_memory(self) -> None:
        """Shrink the arenas of the sessions that ran since the last call (as `OnnxRunner.release_memory`)."""
        options = self._onnxruntime.RunOptions()
        options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
        speed = np.ones(1, dtype=np.float32)
        for session in (self.session, self._lane_session):
            if session is not None and id(session) in self._grown:
                _infer(session, [self.pad_id], self.voice.style_for(1), speed, options)
        self._grown.clear()

    @contextmanager
    def noiseless(self) -> Iterator[None]:
        """Nothing to switch off: the graph has no noise."""
        yield

    def synchronize(self) -> None:
        """Nothing to wait for: `run` returns when the audio exists."""

    def is_out_of_memory(self, err: BaseException) -> bool:
        """True for an allocation failure (MemoryError or ONNX Runtime's failed-allocation message)."""
        return isinstance(err, MemoryError) or "Failed to allocate memory" in str(err)


def _infer(session: Any, tokens: Sequence[int], style: np.ndarray, speed: np.ndarray,
           options: Any = None) -> np.ndarray:
    """One piece through the graph: Kokoro frames its tokens with its boundary token 0 on each side."""
    feed = {"tokens": np.asarray([[0, *tokens, 0]], dtype=np.int64), "style": style, "speed": speed}
    return np.ascontiguousarray(session.run(None, feed, options)[0].reshape(-1), dtype=np.float32)


def lane_stream(pool: ThreadPoolExecutor, lanes: int, work: Callable[[T], np.ndarray],
                items: Iterable[T]) -> Generator[tuple[int, np.ndarray | Exception, float]]:
    """`work(item)` for each item on `pool`, yielding (position, result or its error, seconds it ran) as
    each finishes. At most 2 x `lanes` items are in flight (a book's memory stays bounded); closing the
    generator early drops the items not started and waits for those running."""

    def timed(item: T) -> tuple[np.ndarray | Exception, float]:
        started = time.perf_counter()
        try:
            result: np.ndarray | Exception = work(item)
        except Exception as err:  # handed to the caller with its item, which decides
            result = err
        return result, time.perf_counter() - started

    queued = iter(enumerate(items))
    running: dict[Future[tuple[np.ndarray | Exception, float]], int] = {}
    try:
        while True:
            while len(running) < 2 * lanes and (nxt := next(queued, None)) is not None:
                running[pool.submit(timed, nxt[1])] = nxt[0]
            if not running:
                return
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                yield (running.pop(future), *future.result())
    finally:
        for future in running:
            future.cancel()
        wait(running)
