"""GPU check step: fidelity per module and precision on the card itself (docs/precision.md's table).

For each low precision the card accepts, the voice runs with one VITS module at a time in it (the others
fp32), with all of them, and as the policies run it, each measured against strict fp32 on the same card
(worker.fidelity: log-mel distance, SNR, lengths; noise off) — the table bench.fidelity makes on a CPU
under emulation, measured for real. CUDA only: on a CPU the emulated run takes many minutes
(`python -m bench.fidelity` makes it there).
"""

from __future__ import annotations

import time
from typing import Any

from bench.gpu_check import Check, Outcome


def fidelity_step(check: Check) -> Outcome:
    """The per-module fidelity table for every accepted low precision, with the seconds each row took."""
    from bench.fidelity import variants
    from worker.fidelity import FIDELITY_SENTENCES, measure, reference_audio
    from worker.model import ModelRunner
    from worker.precision import apply_process_settings, autocast_policy, choose_policy

    if check.device is None or check.device.backend != "cuda":
        return Outcome("skipped", "CUDA only (on a CPU: python -m bench.fidelity, minutes under emulation)")
    low = [name for name in ("bf16", "fp16") if _accepted(check, name)]
    if not low:
        return Outcome("skipped", "the card accepts no low precision")
    voice = check.load_voice()
    ids = [voice.encode(sentence).ids for sentence in FIDELITY_SENTENCES]
    fp32 = choose_policy(check.device, "fp32")
    runner = ModelRunner(voice.model, check.device, fp32, noise_off=True)
    apply_process_settings(fp32, check.device)
    reference = reference_audio(runner, check.device, ids)
    rows: list[dict[str, Any]] = []
    for name in low:
        for label, keep in variants():
            runner.set_policy(autocast_policy(check.device, name, keep))
            started = time.perf_counter()
            fidelity = measure(runner, check.device, ids, voice.sample_rate_hz, reference)
            rows.append({"precision": name, "variant": label, "mel_distance_db": fidelity.mel_distance_db,
                         "snr_db": fidelity.snr_db, "duration_error": fidelity.duration_error,
                         "seconds": round(time.perf_counter() - started, 3)})
    runner.restore()
    return Outcome("ok", data={"sentences": len(ids), "rows": rows})


def _accepted(check: Check, name: str) -> bool:
    from schemas.errors import PrecisionRefused
    from worker.precision import choose_policy

    try:
        choose_policy(check.device, name)
    except PrecisionRefused:
        return False
    return True


def fidelity_markdown(data: dict[str, Any]) -> str:
    """The per-module table as docs/precision.md lays it out."""
    rows = [[r["precision"], r["variant"], f"{r['mel_distance_db']:.2f}", f"{r['snr_db']:.1f}",
             f"{r['duration_error']:.2%}", f"{r['seconds']:.2f}"] for r in data.get("rows", [])]
    header = ["precision", "in low precision", "mel distance dB", "SNR dB", "lengths off", "seconds"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return f"Against strict fp32 on this card, {data.get('sentences')} sentences, noise off.\n\n" + "\n".join(lines)
