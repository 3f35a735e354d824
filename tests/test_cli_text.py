"""What a user of `ttsfleet run`/`status` sees of a text: jobs named by their input, warnings in the tables
(a count and the first; --verbose: all), no warning for contractions or invisible characters, subtitles in
the written text, and file names kept whole at 80 columns. The model-free `null:` voice, real subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

TTSFLEET = str(Path(sys.executable).parent / "ttsfleet")
LONG_NAME = "a-rather-long-file-name-that-does-not-fit-a-column"


def _cli(tmp_path: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TTSFLEET_DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite'}",
           "TTSFLEET_OUTPUT_DIR": str(tmp_path / "out"), "TTSFLEET_VOICE": "null:", "COLUMNS": "80"}
    done = subprocess.run([TTSFLEET, *args], capture_output=True, text=True, env=env, input=stdin, cwd=tmp_path,
                          timeout=180, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def _column(table: str, n: int) -> str:
    """The text of column `n` of a rich table, all rows, its wrapped lines joined by spaces."""
    cells = [line.split("│")[1:-1] for line in table.splitlines() if line.startswith("│")]
    return " ".join(row[n].strip() for row in cells if row[n].strip())


def test_tables_warnings_names_and_written_subtitles(tmp_path: Path) -> None:
    (tmp_path / f"{LONG_NAME}.txt").write_text("We meet at 6 p.m. sharp. Pfft, said XKCD 😀.\n", encoding="utf-8")
    (tmp_path / "clean.txt").write_text("They’ll say I’m right, don’t they? A word\u2060joiner.", encoding="utf-8")
    run = _cli(tmp_path, "run", f"{LONG_NAME}.txt", "clean.txt", "-",
               stdin="The quick brown fox jumps over the lazy dog.")
    table = run.stdout
    assert "2 warnings (--verbose shows all); first: unspeakable characters dropped: 😀" in _column(table, 3)
    assert "without a vowel" not in table  # the second warning waits for --verbose
    assert f"  out/{LONG_NAME}.wav\n" in table  # the file whole on a line of its own, not folded
    assert "The quick brown fox jumps over" in _column(table, 0)  # stdin text by its first words
    assert f"{LONG_NAME[:20]}" in _column(table, 0) and "…" in _column(table, 0)  # cut at the end, not folded
    assert all(len(line) <= 80 for line in table.splitlines() if line.startswith(("┃", "│")))
    stats = table[table.index("ttsfleet stats"):]  # the stats table after it fits too, nothing cropped
    caption = " ".join(stats.split())  # its words, however the caption wraps
    assert "latency = submitted → finished" in caption and "or with --format json" in caption, stats
    assert all(len(line.rstrip()) <= 80 for line in stats.splitlines()), stats

    verbose = _column(_cli(tmp_path, "status", "--verbose").stdout, 4)
    assert "2 warnings: 1. unspeakable characters dropped: 😀" in verbose
    assert "2. words without a vowel, which the voice spells letter by letter: Pfft, XKCD" in verbose
    assert "printf 'Pfft\\tPfft\\n' >> lexicon.tsv" in verbose

    views = {Path(v["audio_path"]).name: v for v in json.loads(_cli(tmp_path, "status", "--json").stdout)}
    assert set(views) == {f"{LONG_NAME}.wav", "clean.wav", "the-quick-brown-fox-jumps-over.wav"}
    assert views["clean.wav"]["warnings"] == []  # contractions and the word joiner: nothing to warn about
    assert views["the-quick-brown-fox-jumps-over.wav"]["title"] == "The quick brown fox jumps over"
    assert views["clean.wav"]["title"] == "clean.txt"

    srt = (tmp_path / "out" / f"{LONG_NAME}.srt").read_text(encoding="utf-8")
    vtt = (tmp_path / "out" / f"{LONG_NAME}.vtt").read_text(encoding="utf-8")
    for subtitles in (srt, vtt):
        assert "We meet at 6 p.m. sharp." in subtitles and "six P M" not in subtitles
    manifest = json.loads((tmp_path / "out" / f"{LONG_NAME}.manifest.json").read_text(encoding="utf-8"))
    first = manifest["chunks"][0]
    assert first["text"].startswith("We meet at six P M") and first["written"] == "We meet at 6 p.m. sharp."
