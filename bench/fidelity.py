"""Fidelity per module: which part of a VITS voice loses what under bf16 and fp16 (docs/precision.md).

    python -m bench.fidelity                        # piper:joe on this device (a CPU: torch autocast)
    python -m bench.fidelity --voice DIR --device cuda:0 --wer --json

For each low precision, the voice runs with one module at a time in that precision (the others in fp32),
then with everything in it, then as the policies run it (text encoder and duration predictor in fp32;
and the mixed one with the decoder in fp32 too). Each row is the fidelity measure against strict fp32
(worker.fidelity: log-mel distance, SNR, lengths) over its fixed sentences, noise off, and with `--wer`
the word error rate of the reference paragraph heard by pocketsphinx (fp32's WER printed first).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def variants() -> list[tuple[str, tuple[str, ...]]]:
    """(label, modules kept in fp32) per row: each module alone in low precision, all, the policies."""
    from worker.precision import MIXED_ORDER, VITS_FP32_MODULES, VITS_MODULES

    rows = [(f"{module} only", tuple(m for m in VITS_MODULES if m != module)) for module in VITS_MODULES]
    rows.append(("all modules", ()))
    rows.append(("policy (text encoder, duration predictor fp32)", VITS_FP32_MODULES))
    rows.append(("mixed (decoder fp32 too)", (*VITS_FP32_MODULES, MIXED_ORDER[0])))
    return rows


def main(argv: list[str] | None = None) -> None:
    args = _parse(argv)
    from worker.device import detect_device
    from worker.fidelity import FIDELITY_SENTENCES, measure, reference_audio
    from worker.model import ModelRunner
    from worker.precision import apply_process_settings, autocast_policy
    from worker.voices import load_voice

    device = detect_device(args.device)
    cache = Path(os.environ.get("TTSFLEET_VOICES_CACHE_DIR") or Path(tempfile.gettempdir()) / "ttsfleet-bench-voices")
    voice = load_voice(args.voice, cache)
    ids = [voice.encode(s).ids for s in FIDELITY_SENTENCES[: args.sentences]]
    fp32 = autocast_policy(device, "fp32")
    runner = ModelRunner(voice.model, device, fp32, noise_off=True)
    apply_process_settings(fp32, device)
    reference = reference_audio(runner, device, ids)
    rows: list[dict[str, Any]] = []
    if args.wer:
        rows.append({"precision": "fp32", "variant": "reference", "wer": _wer(runner, voice)})
    for precision in args.precisions.split(","):
        for label, keep in variants():
            if args.only and not any(word in label for word in args.only.split(",")):
                continue
            runner.set_policy(autocast_policy(device, precision, keep))
            started = time.perf_counter()
            fidelity = measure(runner, device, ids, voice.sample_rate_hz, reference)
            row = {"precision": precision, "variant": label, "mel_distance_db": fidelity.mel_distance_db,
                   "snr_db": fidelity.snr_db, "duration_error": fidelity.duration_error,
                   "seconds": round(time.perf_counter() - started, 1)}
            if args.wer and (not args.wer_only or any(w in label for w in args.wer_only.split(","))):
                row["wer"] = _wer(runner, voice)
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    _report(rows, device.name, args)


def _wer(runner: Any, voice: Any) -> float:
    """Word error rate of the reference paragraph, one sentence per run, as the runner's policy says."""
    import numpy as np

    from worker.asr import REFERENCE_PARAGRAPH, transcribe, wer

    pause = np.zeros(int(0.3 * voice.sample_rate_hz), dtype=np.float32)
    pieces = []
    for sentence in re.findall(r"[^.]+\.", REFERENCE_PARAGRAPH):
        pieces += [runner.run([voice.encode(sentence.strip()).ids])[0], pause]
    return round(wer(REFERENCE_PARAGRAPH, transcribe(np.concatenate(pieces), voice.sample_rate_hz)), 3)


def _report(rows: list[dict[str, Any]], device: str, args: argparse.Namespace) -> None:
    if args.json:
        print(json.dumps({"device": device, "voice": args.voice, "rows": rows}))
        return
    print(f"fidelity against strict fp32, {args.voice} on {device} (noise off)")
    print(f"{'precision':<9} {'variant':<48} {'mel dB':>7} {'SNR dB':>7} {'lengths':>8} {'WER':>6} {'s':>6}")
    for row in rows:
        lengths = "" if "duration_error" not in row else f"{row['duration_error']:.1%}"
        print(f"{row['precision']:<9} {row['variant']:<48} {row.get('mel_distance_db', ''):>7} "
              f"{row.get('snr_db', ''):>7} {lengths:>8} {row.get('wer', ''):>6} {row.get('seconds', ''):>6}")


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--voice", default="piper:joe", help="voice name or folder [default: piper:joe]")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N [default: cpu]")
    parser.add_argument("--precisions", default="bf16,fp16", help="comma-separated [default: bf16,fp16]")
    parser.add_argument("--wer", action="store_true", help="also the word error rate (needs pocketsphinx)")
    parser.add_argument("--sentences", type=int, default=None, help="use the first N fidelity sentences [all]")
    parser.add_argument("--only", help="comma-separated words: measure only the variants whose label has one")
    parser.add_argument("--wer-only", help="comma-separated words: the WER only for variants whose label has one")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    return parser.parse_args(argv)


if __name__ == "__main__":
    main()
