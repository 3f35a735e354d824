"""GPU check results: the environment (card, driver, torch, date, commit), results.json and results.md.

Memory is stored in bytes in the JSON and shown in MiB in the Markdown; times in seconds; speeds in
audio-seconds per synthesis-second ("x real time").
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.gpu_fidelity import fidelity_markdown

ROOT = Path(__file__).resolve().parent.parent


def environment(device_spec: str) -> dict[str, Any]:
    """Where the check ran: date (UTC), commit, Python, torch/CUDA/cuDNN, transformers, card and driver."""
    import torch
    import transformers

    env: dict[str, Any] = {
        "date_utc": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S"),
        "commit": commit(), "python": platform.python_version(), "torch": torch.__version__,
        "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version() if torch.cuda.is_available() else None,
        "transformers": transformers.__version__, "host_cpu": platform.processor() or platform.machine(),
        "alloc_conf": os.environ.get("PYTORCH_CUDA_ALLOC_CONF"), "card": None, "driver": None,
    }
    if device_spec.startswith("cuda") and torch.cuda.is_available():
        index = int(device_spec.split(":")[1]) if ":" in device_spec else 0
        props = torch.cuda.get_device_properties(index)
        env.update(card=props.name, capability=f"{props.major}.{props.minor}",
                   memory_gib=round(props.total_memory / 2**30, 1), driver=_driver())
    return env


def commit() -> str:
    """HEAD (with "+dirty" for local changes); else $TTSFLEET_COMMIT; else the commit `make gpu-wheels`
    recorded; else "unknown" (a copied tree may have no .git)."""
    head = _git("rev-parse", "HEAD")
    if head:
        return head + ("+dirty" if _git("status", "--porcelain", "--untracked-files=no") else "")
    if os.environ.get("TTSFLEET_COMMIT"):
        return os.environ["TTSFLEET_COMMIT"]
    recorded = ROOT / ".gpu-wheels" / "COMMIT"
    if recorded.is_file():
        return recorded.read_text().strip() + " (when the wheels were made)"
    return "unknown"


def _git(*args: str) -> str:
    try:
        result = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.SubprocessError):
        return ""
    return result.stdout.strip() if result.returncode == 0 else ""


def _driver() -> str | None:
    try:
        result = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip().splitlines()[0] if result.returncode == 0 and result.stdout.strip() else None


def write_results(results: dict[str, Any], folder: Path) -> None:
    """Write `results.json` and `results.md` into `folder` (replacing earlier ones)."""
    steps = results["steps"]
    results["summary"] = {status: sum(1 for s in steps if s["status"] == status)
                          for status in ("ok", "failed", "skipped")}
    (folder / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    (folder / "results.md").write_text(markdown(results))


def markdown(results: dict[str, Any]) -> str:
    """The results as Markdown: environment, one line per step, then each step's table."""
    env = results["environment"]
    lines = [f"# ttsfleet GPU check ({results['mode']} size)", "",
             _table(["what", "value"], [[key, _cell(value)] for key, value in
                                        [("device", results["device_spec"]), ("voice", results["voice"]),
                                         *env.items()]]), "",
             "## Steps", "",
             _table(["step", "status", "seconds", "why"],
                    [[s["step"], s["status"], f"{s['seconds']:.1f}", s["why"]] for s in results["steps"]]), ""]
    for step in results["steps"]:
        render = SECTIONS.get(step["step"])
        if render is not None and step["data"]:
            lines += [f"## {step['step']}", "", render(step["data"]), ""]
    return "\n".join(lines)


def _table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c).replace("|", "/").replace("\n", " ") for c in row) + " |" for row in rows]
    return "\n".join(out)


def _cell(value: Any) -> str:
    return "-" if value is None else str(value)


def _mib(value: Any) -> str:
    return "-" if value is None else f"{value / 2**20:.0f}"


def _doctor(data: dict[str, Any]) -> str:
    report = data.get("report", {})
    return _table(["field", "value"], [[key, _cell(report.get(key))] for key in
                                       ("name", "capability", "memory_gb", "dtype", "tf32", "mode", "reason")])


def _canary(data: dict[str, Any]) -> str:
    rows = []
    for name, row in data["precisions"].items():
        if not row["accepted"]:
            rows.append([name, "refused", "-", "-", "-", "-", "-", row["refusal"]])
            continue
        rows.append([name, "accepted", _cell(row.get("dtype")), _cell(row.get("tf32")), _cell(row.get("canary_s")),
                     _cell(None if row.get("bytes_per_token") is None else round(row["bytes_per_token"])),
                     _cell(row.get("token_budget")), row.get("problem") or "; ".join(row.get("notes", []))])
    return _table(["precision", "result", "dtype", "TF32", "canary s", "bytes/token", "token budget", "notes"], rows)


def _engines(data: dict[str, Any]) -> str:
    rows = [[r["precision"], str(r["max_batch_items"]), f"{r['audio_s']:.1f}", f"{r['synth_s']:.3f}",
             f"{r['speed_x']:.1f}", _fidelity(r), _mib(r["peak_mem_bytes"]), _above(r), str(r["batches"])]
            for r in data["rows"]]
    naive = data["naive"]
    rows.append(["naive VitsModel loop (fp32)", "1", f"{naive['audio_s']:.1f}", f"{naive['synth_s']:.3f}",
                 f"{naive['speed_x']:.1f}", "-", _mib(naive["peak_mem_bytes"]), "-", str(data["chunks"])])
    ratios = "\n".join(f"- {key}: {value:.2f}" for key, value in data["ratios"].items())
    return (f"{data['chunks']} chunks, noise off (the naive loop: noise on), best of the repeats. Peak memory in "
            "MiB: CUDA max allocated, the weights of every engine the check holds included (also shown above "
            "what was allocated before the run), or on a CPU the process's peak resident set.\n\n"
            + _table(["precision", "max batch items", "audio s", "synth s", "x real time",
                      "fidelity vs fp32 (fp32 modules)", "peak MiB", "peak above resident MiB", "batches"], rows)
            + "\n\nRatios (x real time):\n\n" + ratios)


def _fidelity(row: dict[str, Any]) -> str:
    """`mel 0.41 dB, SNR 27.5 dB (+decoder)`; `reference` for strict fp32."""
    if row.get("fidelity_mel_db") is None:
        return "reference (fp32)" if row.get("dtype") == "float32" and not row.get("tf32") else "-"
    extra = [m for m in (row.get("keep_fp32") or "").split(",") if m in ("decoder", "flow")]
    kept = f" (+{','.join(extra)})" if extra else ""
    return f"mel {row['fidelity_mel_db']:.2f} dB, SNR {row['fidelity_snr_db']:.1f} dB{kept}"


def _above(row: dict[str, Any]) -> str:
    if row.get("resident_bytes") is None or row["peak_mem_bytes"] is None:
        return "-"
    return _mib(row["peak_mem_bytes"] - row["resident_bytes"])


def _plain(data: dict[str, Any]) -> str:
    return _table(["figure", "value"], [[key, _cell(value)] for key, value in data.items()
                                        if not isinstance(value, list | dict)])


def _oom(data: dict[str, Any]) -> str:
    attempts = [[str(a["cap_chunks"]), _mib(a["cap_bytes"]), _cell(a.get("oom_retries")),
                 _cell(a.get("budget_after")), a.get("error", "")] for a in data.get("attempts", [])]
    return (_plain(data) + "\n\nAttempts (cap = reserved memory + K x longest chunk):\n\n"
            + _table(["K", "cap MiB", "OOM retries", "budget after", "error"], attempts))


def _jobs(data: dict[str, Any]) -> str:
    readings = data.get("readings", [])
    key = data.get("measure")
    shown = [readings[i] for i in sorted({0, min(3, len(readings) - 1), len(readings) - 1})] if readings else []
    rows = [[r["job"], _mib(r.get(key))] for r in shown]
    return (_plain({k: v for k, v in data.items() if k != "readings"}) + f"\n\nMemory after a job ({key}, MiB):\n\n"
            + _table(["job", "MiB"], rows))


def _wer(data: dict[str, Any]) -> str:
    rows = [[name, file, _cell(data.get("wer", {}).get(name)), data.get("heard", {}).get(name, "")]
            for name, file in data.get("files", {}).items()]
    return f"Word error rate (pass: at most {data.get('max_wer')}).\n\n" + _table(["precision", "audio", "WER",
                                                                                   "heard"], rows)


SECTIONS: dict[str, Callable[[dict[str, Any]], str]] = {
    "doctor": _doctor, "canary": _canary, "engines": _engines, "fidelity": fidelity_markdown,
    "memory_probe": _plain, "oom": _oom, "jobs": _jobs, "intelligibility": _wer,
}
