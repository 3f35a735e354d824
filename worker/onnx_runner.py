"""Running a Piper voice's own ONNX model through ONNX Runtime on a CPU: the engine's fast CPU runtime.

The same weights the converted `PiperVitsModel` holds (the bundled file is checked against its sha256
before use), fed the same phoneme ids, with the noise scales and speaking rate from the voice's config.
Eager PyTorch spends most of a VITS forward in small convolutions; ONNX Runtime runs the fused graph
about 2.5x faster per sentence on this project's CPUs (docs/benchmarks.md). Imports neither torch nor
transformers.

Piper's graph takes a batch but returns no output lengths, so a padded item's tail cannot be cut off:
items run one per graph call. Several items given together run side by side instead, one per "lane" (a
thread calling a second session limited to one intra-op thread): on a CPU, VITS' small convolutions
spread badly over cores, so two sentences at once on one core each make more audio per second than one
sentence on two cores (docs/benchmarks.md). A lone item still gets every core.

Its noise comes from an unseeded RandomNormalLike, so per-chunk seeds are not honoured here; with noise
off (`deterministic`) the audio is exactly reproducible, as on torch.
"""

from __future__ import annotations

import hashlib
import os
import platform
import tempfile
import time
from collections.abc import Generator, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from schemas.errors import PermanentError, first_line
from schemas.status import Runtime
from worker.device import DeviceInfo
from worker.fidelity import Fidelity
from worker.precision import Policy
from worker.runner import LaneItem

__all__ = ["LaneItem", "OnnxRunner", "OnnxVoice"]

if TYPE_CHECKING:
    pass


@dataclass(frozen=True, slots=True)
class OnnxVoice:
    """A Piper ONNX model file and the scales it is run with: `noise_scale` and `noise_w` (the duration
    predictor's noise) as in the voice config, `length_scale` = 1 / speaking rate (>1 is slower)."""

    path: Path
    noise_scale: float = 0.667
    length_scale: float = 1.0
    noise_w: float = 0.8
    # Where the graph optimized for this machine is kept (None: optimize at every start, ~1 s).
    cache_dir: Path | None = None
    # For a graph exported from a transformers voice: its audio against PyTorch's, checked at export.
    checked: Fidelity | None = None


def cores_available() -> int:
    """The CPU cores this process may run on (its affinity mask; all cores where that cannot be read)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _session(onnxruntime: Any, voice: OnnxVoice, options: Any) -> Any:
    """An inference session for `voice`, from the cached optimized graph when there is one; otherwise the
    model is optimized now and, with a cache folder, the result saved (atomically) for the next start."""
    providers = ["CPUExecutionProvider"]
    cached = _optimized_path(onnxruntime, voice)
    if cached is not None and cached.is_file():
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
        return onnxruntime.InferenceSession(str(cached), options, providers=providers)
    if cached is None:
        return onnxruntime.InferenceSession(str(voice.path), options, providers=providers)
    cached.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{cached.name}.", suffix=".tmp", dir=cached.parent)
    os.close(fd)
    try:
        options.optimized_model_filepath = tmp
        session = onnxruntime.InferenceSession(str(voice.path), options, providers=providers)
        os.replace(tmp, cached)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return session


def _optimized_path(onnxruntime: Any, voice: OnnxVoice) -> Path | None:
    """`cache_dir/<model>-ort<version>-<cpu>.onnx`, or None without a cache folder. The model part is its
    size and modification time (the bundled file's content is checked by sha256 at load)."""
    if voice.cache_dir is None:
        return None
    stat = voice.path.stat()
    model = hashlib.sha256(f"{voice.path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    cpu = hashlib.sha256(_cpu_signature().encode()).hexdigest()[:12]
    return Path(voice.cache_dir) / f"{voice.path.stem}-{model}-ort{onnxruntime.__version__}-{cpu}.onnx"


def _cpu_signature() -> str:
    """The CPU model and its instruction-set flags (what an optimized graph's kernels may depend on)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            lines = [line for line in info if line.startswith(("model name", "flags", "Features"))]
        return "".join(dict.fromkeys(lines)) or platform.machine()
    except OSError:
        return f"{platform.machine()} {platform.processor()}"


class OnnxRunner:
    """The ONNX counterpart of `worker.model.ModelRunner` (a `Runner`): no padded batches, lanes instead.

    `threads` is ONNX Runtime's intra-op thread count for a lone item (None: `cores_available()`); inter-op
    is 1 (the graph is one chain). `lanes` items of one `run` call are synthesized at once, each on one
    thread of a second session (None: as many as `threads`; 1: one item after another, one session).
    The graph ONNX Runtime optimizes at load (~1 s on a 2-core CPU) is saved once in `voice.cache_dir`,
    keyed by the model's content, the onnxruntime version and this CPU (the optimized
    graph may use CPU-specific layouts), and loaded as it is afterwards.
    Raises PermanentError when onnxruntime is missing or the model cannot be loaded.
    """

    runtime = Runtime.ONNXRUNTIME
    torch_device = "cpu"
    device_type = "cpu"
    padded_batches = False  # the graph returns no output lengths: one item per call, side by side on lanes

    def __init__(self, voice: OnnxVoice, device: DeviceInfo, policy: Policy, *, noise_off: bool = False,
                 threads: int | None = None, lanes: int | None = None, pad_id: int = 0) -> None:
        try:
            import onnxruntime
        except ImportError as err:
            raise PermanentError("the onnxruntime runtime needs the onnxruntime package "
                                 "(pip install onnxruntime), or run with --runtime torch") from err
        self.device = device
        self.policy = policy
        self.pad_id = pad_id
        self.threads: int | None = threads or cores_available()
        self.lanes = max(1, lanes or self.threads or 1)
        try:
            self.session: Any = _session(onnxruntime, voice, _options(onnxruntime, self.threads or 1))
        except Exception as err:  # onnxruntime raises its own exception types (Fail, InvalidGraph, ...)
            raise PermanentError(f"cannot load the ONNX model {voice.path}: {first_line(err)}") from err
        self._pool = ThreadPoolExecutor(self.lanes, thread_name_prefix="ttsfleet-lane") if self.lanes > 1 else None
        # The lanes' own session (the same graph, weights loaded twice: ~60 MB for a medium voice), made at
        # the first call with several items: a one-sentence `ttsfleet run` never waits ~0.4 s for it.
        self._lane_session: Any = None
        self._voice = voice
        noise, noise_w = (0.0, 0.0) if noise_off else (voice.noise_scale, voice.noise_w)
        self._scales = np.array([noise, voice.length_scale, noise_w], dtype=np.float32)
        self._inputs = {i.name for i in self.session.get_inputs()}
        self._onnxruntime = onnxruntime
        self._grown: set[int] = set()  # ids of the sessions that ran since `release_memory`
        self._sid0 = np.zeros(1, dtype=np.int64) if "sid" in self._inputs else None
        if not {"input", "input_lengths", "scales"} <= self._inputs:
            raise PermanentError(f"{voice.path} is not a Piper voice model (inputs: {sorted(self._inputs)})")

    def set_policy(self, policy: Policy) -> None:
        """Record `policy` (a CPU policy is fp32 whatever the fallback; nothing to re-install)."""
        self.policy = policy

    def run(self, ids: Sequence[Sequence[int]], *, seed: int | None = None,
            fp32: bool = False, speed: float = 1.0, speaker_id: int | None = None) -> list[np.ndarray]:
        """Synthesize each token-id list on its own (up to `lanes` at once); float32 waves at the voice's
        rate, one per item, in the order given.
        `speed` divides the voice's length scale (2.0: half as long); `speaker_id` is Piper's `sid` input
        of a multi-speaker voice (0 when None). `seed` and `fp32` are accepted for the runner interface and
        have no effect (see module docstring)."""
        scales = self._scales.copy()
        scales[1] /= speed
        sid = np.asarray([speaker_id or 0], dtype=np.int64) if "sid" in self._inputs else None
        if len(ids) > 1 and self._pool is not None:
            lane = self._lanes_session()
            self._grown.add(id(lane))
            return list(self._pool.map(lambda item: _synthesize(lane, item, scales, sid), ids))
        self._grown.add(id(self.session))
        return [_synthesize(self.session, item, scales, sid) for item in ids]

    def stream(self, items: Sequence[LaneItem]) -> Generator[tuple[int, np.ndarray | Exception, float]]:
        """Synthesize `items` side by side on the lanes, yielding (position in `items`, float32 wave, wall
        seconds in its lane) as each finishes, not in order. A lane takes the next item as soon as it is
        free, so no lane waits for another, and the caller stores a finished item while the lanes run on.
        An item's error is yielded in place of its wave (the caller decides: redo it alone, or give up).
        At most 2 x `lanes` items are in flight (memory stays bounded for a whole book); closing the
        iterator early drops the items not started and waits for those running. Needs `lanes` > 1."""
        if self._pool is None:
            raise ValueError("stream needs a runner with lanes > 1")
        lane, pool = self._lanes_session(), self._pool
        self._grown.add(id(lane))

        def one(item: LaneItem) -> tuple[np.ndarray | Exception, float]:
            started = time.perf_counter()
            scales = self._scales.copy()
            scales[1] /= item.speed
            sid = np.asarray([item.speaker_id or 0], dtype=np.int64) if "sid" in self._inputs else None
            try:
                wave: np.ndarray | Exception = _synthesize(lane, item.ids, scales, sid)
            except Exception as err:  # handed to the caller with its item, which decides
                wave = err
            return wave, time.perf_counter() - started

        queued = iter(enumerate(items))
        running: dict[Future[tuple[np.ndarray | Exception, float]], int] = {}
        try:
            while True:
                while len(running) < 2 * self.lanes and (nxt := next(queued, None)) is not None:
                    running[pool.submit(one, nxt[1])] = nxt[0]
                if not running:
                    return
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    yield (running.pop(future), *future.result())
        finally:
            for future in running:
                future.cancel()
            wait(running)

    def _lanes_session(self) -> Any:
        """The lanes' one-thread session, loaded at first use (from the main thread, before any lane runs).

        Raises PermanentError when the model cannot be loaded."""
        if self._lane_session is None:
            try:
                self._lane_session = _session(self._onnxruntime, self._voice, _options(self._onnxruntime, 1))
            except Exception as err:  # onnxruntime's own exception types, as at start
                raise PermanentError(f"cannot load the ONNX model {self._voice.path}: {first_line(err)}") from err
        return self._lane_session

    def release_memory(self) -> None:
        """Give back what ONNX Runtime's arenas grew to for the last job's longest input. The arenas keep
        memory once grown (per session, lanes running at once adding up: +150-250 MB over 100 notices
        here), so between jobs each session runs a token with arena shrinkage on, which frees every arena
        block that run leaves unused: a worker's memory follows its current job, not the longest it ever
        ran. Only a session that ran since the last call is shrunk (a job of several chunks runs on the
        lanes' session alone): 50-120 ms each after 8 notices here, partly the arena's regrowth."""
        options = self._onnxruntime.RunOptions()
        options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
        for session in (self.session, self._lane_session):
            if session is not None and id(session) in self._grown:
                _synthesize(session, [self.pad_id], self._scales, self._sid0, options)
        self._grown.clear()

    @contextmanager
    def noiseless(self) -> Iterator[None]:
        """The noise scales at 0 while inside (the length scale kept)."""
        saved = self._scales.copy()
        self._scales[0] = self._scales[2] = 0.0
        try:
            yield
        finally:
            self._scales = saved

    def synchronize(self) -> None:
        """Nothing to wait for: `run` returns when the audio exists."""

    def is_out_of_memory(self, err: BaseException) -> bool:
        """True for an allocation failure (MemoryError or ONNX Runtime's failed-allocation message)."""
        return isinstance(err, MemoryError) or "Failed to allocate memory" in str(err)


def _options(onnxruntime: Any, threads: int) -> Any:
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3  # errors only: Piper graphs warn about unused initializers
    return options


def _synthesize(session: Any, item: Sequence[int], scales: np.ndarray, sid: np.ndarray | None,
                options: Any = None) -> np.ndarray:
    """One item through `session` (ONNX Runtime releases the GIL while it runs, so lanes overlap)."""
    feed = {"input": np.asarray([item], dtype=np.int64), "input_lengths": np.asarray([len(item)], dtype=np.int64),
            "scales": scales}
    if sid is not None:
        feed["sid"] = sid
    return np.ascontiguousarray(session.run(None, feed, options)[0].reshape(-1), dtype=np.float32)
