"""GPU check step 7: is the speech still intelligible under each precision? The reference paragraph is
spoken one sentence per chunk (noise off) by every started engine, written as `wer-<precision>.wav`
(16-bit PCM) into the output folder, and judged by pocketsphinx (word error rate, 0 = perfect).

The device machine has no room for pocketsphinx (see bench/gpu-wheels.txt): there the step writes the
audio and is skipped, and `python -m bench.gpu_check --wer DIR` (or `make gpu-wer GPU_OUT=DIR`) measures it
on any machine with the `test` extra, updating DIR/results.json and DIR/results.md.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from bench.gpu_check import Check, Outcome

PAUSE_S = 0.3


def intelligibility_step(check: Check) -> Outcome:
    """Speak the paragraph under every started engine, write the audio, judge it when pocketsphinx is here."""
    from worker.asr import REFERENCE_PARAGRAPH
    from worker.precision import apply_process_settings

    if not check.engines:
        return Outcome("failed", "no engine started (see the canary step)")
    sentences = re.findall(r"[^.]+\.", REFERENCE_PARAGRAPH)
    files = {}
    for name, engine in check.engines.items():
        apply_process_settings(engine.policy, check.device)
        files[name] = write_paragraph(engine, sentences, check.out / f"wer-{name}.wav")
    return judge(files, check.out)


def write_paragraph(engine: Any, sentences: list[str], path: Path) -> str:
    """Synthesize one chunk per sentence, join them with short pauses, write 16-bit WAV; returns the name."""
    import soundfile as sf

    from worker.engine import ChunkInput

    pieces: dict[int, np.ndarray] = {}

    def keep(audio: Any) -> None:
        pieces[audio.idx] = audio.samples

    chunks = [ChunkInput(idx=i, text=s.strip(), seed=i) for i, s in enumerate(sentences)]
    try:
        engine.synthesize(chunks, keep)
    finally:
        engine.cleanup()
    pause = np.zeros(int(PAUSE_S * engine.sample_rate_hz), dtype=np.float32)
    audio = np.concatenate([part for idx in sorted(pieces) for part in (pieces[idx], pause)])
    sf.write(path, np.clip(audio, -1.0, 1.0), engine.sample_rate_hz, subtype="PCM_16")
    return path.name


def judge(files: dict[str, str], folder: Path) -> Outcome:
    """WER of each file (names relative to `folder`) against the paragraph; skipped when pocketsphinx is
    not installed here, failed when one is above MAX_WER."""
    from worker.asr import MAX_WER

    data: dict[str, Any] = {"files": files, "max_wer": MAX_WER}
    try:
        import pocketsphinx  # noqa: F401
    except ImportError:
        return Outcome("skipped", "pocketsphinx is not installed here: audio written; measure it with "
                                  "`python -m bench.gpu_check --wer DIR`", data)
    return _measure(files, folder, data)


def _measure(files: dict[str, str], folder: Path, data: dict[str, Any]) -> Outcome:
    import soundfile as sf

    from worker.asr import MAX_WER, REFERENCE_PARAGRAPH, transcribe, wer

    data["wer"], data["heard"] = {}, {}
    for name, file in files.items():
        audio, rate = sf.read(folder / file, dtype="float32")
        heard = transcribe(audio, rate)
        data["wer"][name], data["heard"][name] = round(wer(REFERENCE_PARAGRAPH, heard), 3), heard
    worst = {name: value for name, value in data["wer"].items() if value > MAX_WER}
    if worst:
        return Outcome("failed", f"word error rate above {MAX_WER}: {worst}", data)
    return Outcome("ok", data=data)


def finish_from_folder(folder: Path, out: Path) -> int:
    """`--wer DIR`: measure DIR's audio and write the results, its intelligibility step replaced, into `out`
    (DIR itself, or another folder when DIR is read-only; the audio is copied along). Returns the exit
    status: 0 when the step is ok."""
    from bench.gpu_report import write_results

    results_file = folder / "results.json"
    if not results_file.is_file():
        print(f"error: {results_file} does not exist (run the check first)")
        return 1
    results = json.loads(results_file.read_text())
    step = next((s for s in results["steps"] if s["step"] == "intelligibility"), None)
    if step is None or not step["data"].get("files"):
        print(f"error: {results_file} has no intelligibility audio to measure")
        return 1
    outcome = judge(step["data"]["files"], folder)
    step.update(status=outcome.status, why=outcome.why, data=outcome.data, measured_elsewhere=True)
    out.mkdir(parents=True, exist_ok=True)
    if out.resolve() != folder.resolve():
        for name in step["data"]["files"].values():
            shutil.copy2(folder / name, out / name)
    write_results(results, out)
    print(f"intelligibility: {outcome.status}" + (f" ({outcome.why})" if outcome.why else ""))
    return 0 if outcome.status == "ok" else 1
