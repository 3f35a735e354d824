"""The `.m4b` after a book's last chapter: one AAC encode of the whole book at the end (how books were built
before) against the last chapter's own encode plus a join without encoding again (how they are built now:
the other chapters were encoded beside synthesis while later ones were made). Side by side in one run, on
the same chapter files; one JSON line last.

The chapters are speech-like signals (noise shaped like a voice's spectrum, syllable-rate bursts, pauses) of
given lengths, written as 16-bit WAV at 22,050 Hz as a worker writes them: AAC's cost depends on the
samples, not on the words, so a model is not needed to measure it (and silence, the `null:` voice's
output, would flatter both).

    python -m bench.books [--minutes 3,5,4,6,2,4] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from worker import book_audio

RATE_HZ = 22_050


def speech_like(seconds: float, seed: int) -> np.ndarray:
    """Noise with a voice's falling spectrum, in 4 Hz syllable bursts, with a pause every few seconds."""
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE_HZ)
    noise = np.cumsum(rng.standard_normal(n)) * 0.02  # brown-ish: energy falls with frequency, as in speech
    noise -= np.convolve(noise, np.ones(64) / 64, mode="same")  # no DC drift
    t = np.arange(n) / RATE_HZ
    bursts = np.clip(np.sin(2 * np.pi * 4.0 * t), 0, None) * (np.sin(2 * np.pi * 0.15 * t) > -0.6)
    return np.asarray(np.clip(noise * bursts * 0.5, -1, 1), dtype=np.float32)


def one_pass(chapters: list[tuple[str, Path]], out_path: Path) -> None:
    """The book as it was built before: every chapter file through one AAC encode (concat demuxer)."""
    work = out_path.parent
    (work / "meta.txt").write_text(book_audio.chapter_metadata(chapters, "Bench Book", "A. Writer"), encoding="utf-8")
    (work / "list.txt").write_text("".join(f"file '{p.resolve()}'\n" for _, p in chapters), encoding="utf-8")
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "concat", "-safe", "0", "-i",
                    str(work / "list.txt"), "-i", str(work / "meta.txt"), "-map", "0:a", "-map_metadata", "1",
                    "-map_chapters", "1", "-c:a", "aac", "-b:a", book_audio.AAC_BITRATE, "-movflags", "+faststart",
                    "-f", "mp4", str(out_path)], check=True)


def _timed(fn: object, *args: object) -> float:
    started = time.perf_counter()
    fn(*args)  # type: ignore[operator]
    return time.perf_counter() - started


def _after(chapters: list[tuple[str, Path]], work: Path) -> tuple[float, float]:
    """(seconds from the last chapter's success to the .m4b, seconds spent encoding the others beforehand)."""
    encoded: list[tuple[str, Path, float]] = []
    started = time.perf_counter()
    for number, (title, path) in enumerate(chapters[:-1]):
        aac = book_audio.encode_chapter(path, work / f"{number}.m4a")
        assert aac is not None
        encoded.append((title, aac, book_audio.encoded_duration_s(aac)))
    beside_s = time.perf_counter() - started
    started = time.perf_counter()
    title, path = chapters[-1]
    aac = book_audio.encode_chapter(path, work / "last.m4a")
    assert aac is not None
    encoded.append((title, aac, book_audio.encoded_duration_s(aac)))
    book_audio.join_book(encoded, "Bench Book", work / "book.m4b", author="A. Writer")
    return time.perf_counter() - started, beside_s


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", default="3,5,4,6,2,4", help="chapter lengths in minutes")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    assert book_audio.ffmpeg_available(), "ffmpeg and ffprobe are needed"
    minutes = [float(m) for m in args.minutes.split(",")]
    with tempfile.TemporaryDirectory(prefix="ttsfleet-bench-books-") as tmp:
        root = Path(tmp)
        chapters = []
        for number, length in enumerate(minutes):
            path = root / f"{number:02d}.wav"
            sf.write(str(path), speech_like(length * 60, number), RATE_HZ, subtype="PCM_16")
            chapters.append((f"Chapter {number + 1}", path))
        before, after, beside = [], [], []
        for round_ in range(args.rounds):  # alternated, so load on the machine falls on both alike
            (root / f"b{round_}").mkdir()
            (root / f"a{round_}").mkdir()
            before.append(_timed(one_pass, chapters, root / f"b{round_}" / "book.m4b"))
            critical, early = _after(chapters, root / f"a{round_}")
            after.append(critical)
            beside.append(early)
            print(f"round {round_ + 1}: one encode at the end {before[-1]:.2f} s; "
                  f"last chapter's encode + join {after[-1]:.2f} s (others encoded beforehand: {beside[-1]:.2f} s)")
    result = {"chapters": len(minutes), "audio_min": sum(minutes), "rounds": args.rounds,
              "before_s": round(statistics.median(before), 2), "after_s": round(statistics.median(after), 2),
              "encoded_beside_synthesis_s": round(statistics.median(beside), 2),
              "speedup": round(statistics.median(before) / statistics.median(after), 1)}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
