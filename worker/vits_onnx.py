"""Any transformers VITS voice on ONNX Runtime: exported to ONNX once, checked, cached by its weights' hash.

A voice without a Piper ONNX model (a `save_pretrained` or `voices import-piper` folder, an `hf:` MMS
voice) would run on eager PyTorch on a CPU, ~2.5x slower than ONNX Runtime (docs/benchmarks.md). So at its
first load for onnxruntime it is exported with the graph interface Piper's models have — inputs `input`
(token ids), `input_lengths`, `scales` ([noise scale, length scale, duration noise]) and, for a
multi-speaker voice, `sid` — so `OnnxRunner` runs it, on the same lanes, as it runs a Piper voice. The
export is checked against PyTorch with noise off (the fidelity measure, worker.fidelity) before it is
kept; a failed check keeps the voice on torch. The file is written atomically under a lock into
`<voices cache>/exported/`, named after the sha256 of the voice's weight files and the exporter version,
so a changed voice is exported again and an unchanged one never is.

torch's TorchScript-based exporter is used (`dynamo=False`): the torch.export-based one needs the
onnxscript package, which ttsfleet does not install. The model's forward is traced, so the noise scales
are tensors for the trace (graph inputs), not Python floats (constants); the output length stays
data-dependent in the graph (checked down to one-token inputs).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

from schemas.errors import RetryableError
from worker.fidelity import FIDELITY_SENTENCES, Fidelity, FidelityBar, compare

log = logging.getLogger("worker.voices")

EXPORTER_VERSION = 1  # bump when the exported graph changes, so caches are rebuilt
OPSET = 17
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "config.json")
# An export runs the same fp32 weights through another runtime: only float rounding may differ.
EXPORT_BAR = FidelityBar(max_mel_distance_db=0.1, min_snr_db=40.0, max_duration_error=0.0)
LOCK_TIMEOUT_S = 600.0


def weights_hash(folder: Path) -> str | None:
    """sha256 of a voice folder's weight and config files (None when it has no weight file)."""
    digest = hashlib.sha256()
    found = False
    for name in WEIGHT_FILES:
        path = folder / name
        if path.is_file():
            found = found or name != "config.json"
            digest.update(name.encode())
            with path.open("rb") as f:
                digest.update(hashlib.file_digest(f, "sha256").digest())
    return digest.hexdigest() if found else None


def model_hash(model: Any) -> str:
    """sha256 of a loaded model's weights (for a voice without a folder of its own: an hf: voice)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def exported_path(cache_dir: Path, key: str) -> Path:
    """Where the export of the weights hashed `key` is kept."""
    return Path(cache_dir) / "exported" / f"vits-{key[:16]}-x{EXPORTER_VERSION}.onnx"


def cached_check(path: Path) -> Fidelity | None:
    """The check recorded beside an export at `path` when both are there (the export is then ready to run
    without loading the torch model); None otherwise."""
    record = path.with_suffix(".check.json")
    if not (path.is_file() and record.is_file()):
        return None
    return Fidelity(**json.loads(record.read_text(encoding="utf-8")))


def export_checked(model: Any, encode: Any, sample_rate_hz: int, path: Path) -> Fidelity:
    """Export `model` to `path` (atomically, under a lock: several workers may load the voice at once) unless
    it is there, then check it against PyTorch with noise off, once: the check's result is kept beside the
    graph (`.check.json`) and read back on later loads. Returns the check's fidelity.

    Raises PermanentError when the export fails or does not match PyTorch (the file is then removed),
    RetryableError when another process holds the lock for LOCK_TIMEOUT_S.
    """
    from filelock import FileLock, Timeout

    from schemas.errors import PermanentError

    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with FileLock(str(path) + ".lock", timeout=LOCK_TIMEOUT_S):
            recorded = cached_check(path)
            if recorded is not None:
                return recorded
            if not path.is_file():
                _export(model, path)
            fidelity = check(model, encode, sample_rate_hz, path)
            problem = EXPORT_BAR.problem(fidelity)
            if problem is not None:
                path.unlink(missing_ok=True)
                raise PermanentError(f"the ONNX export does not match PyTorch ({problem})")
            _write_atomically(path.with_suffix(".check.json"), json.dumps(asdict(fidelity)))
    except Timeout as err:
        raise RetryableError(f"waited {LOCK_TIMEOUT_S:.0f} s for another process exporting {path.name}") from err
    return fidelity


def check(model: Any, encode: Any, sample_rate_hz: int, path: Path) -> Fidelity:
    """The export at `path` against `model` on PyTorch, noise off, over the fidelity sentences (one by one).
    A multi-speaker voice is checked with its last speaker, so a graph that ignored `sid` would fail."""
    import numpy as np
    import onnxruntime
    import torch

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    speakers = int(getattr(model.config, "num_speakers", 1) or 1)
    sid = speakers - 1
    rate = float(getattr(model, "speaking_rate", 1.0))
    reference, exported = [], []
    with _noise(model, 0.0, 0.0), torch.inference_mode():
        for sentence in FIDELITY_SENTENCES:
            ids = encode(sentence).ids
            out = model(input_ids=torch.tensor([ids]), speaking_rate=rate,
                        **({"speaker_id": sid} if speakers > 1 else {}))
            reference.append(out.waveform[0, : int(out.sequence_lengths[0])].float().numpy())
            feed = {"input": np.asarray([ids], dtype=np.int64), "input_lengths": np.asarray([len(ids)], dtype=np.int64),
                    "scales": np.asarray([0.0, 1.0 / rate, 0.0], dtype=np.float32)}
            if speakers > 1:
                feed["sid"] = np.asarray([sid], dtype=np.int64)
            exported.append(session.run(None, feed)[0].reshape(-1))
    return compare(reference, exported, sample_rate_hz)


class _Graph:
    """The module traced for export: Piper's inputs around the voice's own forward (built lazily, so this
    module imports no torch)."""

    @staticmethod
    def build(model: Any) -> Any:
        import torch

        class Graph(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.model = model

            def forward(self, ids: Any, lengths: Any, scales: Any, sid: Any = None) -> Any:
                mask = (torch.arange(ids.shape[1], device=ids.device)[None, :] < lengths[:, None]).long()
                with _noise(self.model, scales[0], scales[2]):
                    out = self.model(input_ids=ids, attention_mask=mask, speaking_rate=1.0 / scales[1],
                                     **({"speaker_id": sid} if sid is not None else {}))
                return out.waveform.unsqueeze(1)

        return Graph().eval()


def _export(model: Any, path: Path) -> None:
    """Trace `model` into `path`, written atomically. Its weight norm is folded into plain weights first
    (the same forward, one tensor per convolution in the graph)."""
    import torch

    plain = model.float().eval()
    _remove_weight_norm(plain)
    speakers = int(getattr(plain.config, "num_speakers", 1) or 1)
    ids = torch.ones((1, 40), dtype=torch.long)
    args: tuple[Any, ...] = (ids, torch.tensor([40]), torch.tensor([0.667, 1.0, 0.8]))
    names = ["input", "input_lengths", "scales"]
    axes: dict[str, dict[int, str]] = {"input": {0: "batch", 1: "phonemes"}, "input_lengths": {0: "batch"},
                                       "output": {0: "batch", 3: "time"}}
    if speakers > 1:
        args, names = (*args, torch.tensor([0])), [*names, "sid"]
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        # The TorchScript exporter is deprecated (it warns) and the trace warns at every Python branch on a
        # size; both are expected here: the export is checked against PyTorch before it is used.
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(_Graph.build(plain), args, tmp, input_names=names, output_names=["output"],
                              dynamic_axes=axes, opset_version=OPSET, dynamo=False)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    log.info("exported %s to ONNX (%s)", type(model).__name__, path)


def _write_atomically(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def _remove_weight_norm(model: Any) -> None:
    """Fold weight-norm parametrizations into plain weights (the graph then holds one tensor per conv)."""
    from torch.nn.utils import parametrize

    for module in list(model.modules()):
        if parametrize.is_parametrized(module):
            for name in list(module.parametrizations):
                parametrize.remove_parametrizations(module, name, leave_parametrized=True)


@contextmanager
def _noise(model: Any, noise_scale: Any, noise_w: Any) -> Iterator[None]:
    """The model's noise scales set while inside (floats, or tensors while tracing)."""
    saved = (model.noise_scale, model.noise_scale_duration)
    model.noise_scale, model.noise_scale_duration = noise_scale, noise_w
    try:
        yield
    finally:
        model.noise_scale, model.noise_scale_duration = saved
