"""Piper -> transformers conversion: exactness against onnxruntime (single- and multi-speaker voices), clean
loading, ResBlock2, text -> ids, speakers named and refused."""

from __future__ import annotations

import functools
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from producer.cli import main
from schemas.errors import PermanentError
from schemas.voices import BUNDLED_PIPER
from tests.conftest import TEST_VOICE_DIRS
from tests.piper_voices import SPEAKERS, PiperFiles, build_piper_multispeaker
from worker.voices import verify_bundled

TEXTS = ["The quick brown fox jumps over the lazy dog.",
         "Hello, world! How are you today? Fine, thank you: forty-two times."]


@pytest.fixture(scope="module")
def joe_files() -> tuple[Path, Path]:
    return verify_bundled(BUNDLED_PIPER["joe"])


@pytest.fixture(scope="module")
def imported(joe_files: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled voice converted through the real CLI (`ttsfleet voices import-piper`)."""
    out = tmp_path_factory.mktemp("imported") / "joe"
    main(["voices", "import-piper", str(joe_files[0]), str(joe_files[1]), str(out)])
    return out


def _onnx_waveform(onnx_path: Path, ids: list[int]) -> np.ndarray:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 2
    session = onnxruntime.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    out = session.run(None, {"input": np.array([ids], dtype=np.int64),
                             "input_lengths": np.array([len(ids)], dtype=np.int64),
                             "scales": np.array([0.0, 1.0, 0.0], dtype=np.float32)})[0]
    return np.asarray(out, dtype=np.float32).reshape(-1)


@pytest.mark.slow
def test_converted_model_matches_onnx_with_noise_off(imported: Path, joe_files: tuple[Path, Path]) -> None:
    from worker.voices import load_piper_folder

    voice = load_piper_folder(imported)
    voice.model.noise_scale = 0.0
    voice.model.noise_scale_duration = 0.0
    for text in TEXTS:
        ids = voice.encode(text).ids
        expected = _onnx_waveform(joe_files[0], ids)
        with torch.inference_mode():
            out = voice.model(input_ids=torch.tensor([ids]))
        got = out.waveform[0, : out.sequence_lengths[0]].numpy()
        assert got.shape == expected.shape
        assert float(np.abs(got - expected).max()) < 1e-3
        assert float(np.abs(got).max()) > 0.1  # real speech, not silence


def test_converted_folder_loads_cleanly(imported: Path, caplog: pytest.LogCaptureFixture) -> None:
    from safetensors import safe_open

    from worker.piper import PiperVitsModel

    with caplog.at_level(logging.WARNING):
        loaded: Any = PiperVitsModel.from_pretrained(imported, output_loading_info=True)
    model, info = loaded
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    with safe_open(str(imported / "model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert not [k for k in keys if k.startswith("posterior_encoder") or ".post_" in k]
    assert (imported / "model.safetensors").stat().st_size < 70_000_000  # 95 MB with the training parts
    assert model.config.sampling_rate == 22050 and model.config.resblock_type == "2"
    assert (model.noise_scale, model.noise_scale_duration, model.speaking_rate) == (0.667, 0.8, 1.0)
    assert next(model.parameters()).dtype == torch.float32


def test_encoder_frames_ids_like_piper(joe_files: tuple[Path, Path]) -> None:
    from piper import PiperVoice

    from worker.piper import PiperEncoder, read_piper_config

    pcfg = read_piper_config(joe_files[1])
    encoder = PiperEncoder(pcfg)
    piper_voice = PiperVoice.load(joe_files[0], config_path=joe_files[1])
    [phonemes] = piper_voice.phonemize(TEXTS[0])
    encoded = encoder(TEXTS[0])
    assert encoded.ids == piper_voice.phonemes_to_ids(phonemes)
    assert encoded.dropped == ""
    # several sentences of one chunk: one ^ ... $ frame, sentences joined by a space phoneme
    sentences = piper_voice.phonemize(TEXTS[1])
    assert len(sentences) == 3
    joined = encoder(TEXTS[1]).ids
    assert joined[:2] == [1, 0] and joined[-1] == 2 and joined.count(1) == 1 and joined.count(2) == 1
    assert joined[1:-1:2] == [0] * (sum(len(s) for s in sentences) + len(sentences))  # blanks between all


def test_encoder_reports_unmapped_phonemes(joe_files: tuple[Path, Path]) -> None:
    from worker.piper import PiperEncoder, read_piper_config

    pcfg = read_piper_config(joe_files[1])
    full = PiperEncoder(pcfg)("Think.")
    del pcfg["phoneme_id_map"]["θ"]
    encoded = PiperEncoder(pcfg)("Think.")
    assert encoded.dropped == "θ"
    assert len(encoded.ids) == len(full.ids) - 2  # the phoneme and its blank


def test_resblock2_model_round_trips(tmp_path: Path) -> None:
    from transformers import VitsConfig

    from worker.piper import PiperVitsModel, ResBlock2

    config = VitsConfig(
        vocab_size=20, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, window_size=2, ffn_dim=16,
        flow_size=8, spectrogram_bins=16, upsample_initial_channel=16, upsample_rates=[8, 8, 4],
        upsample_kernel_sizes=[16, 16, 8], resblock_kernel_sizes=[3, 5], resblock_dilation_sizes=[[1, 2], [2, 6]],
        prior_encoder_num_flows=1, prior_encoder_num_wavenet_layers=1, duration_predictor_num_flows=2,
        depth_separable_num_layers=1, duration_predictor_filter_channels=16, sampling_rate=16000,
        pad_token_id=0, noise_scale=0.0, noise_scale_duration=0.0)
    config.resblock_type = "2"
    config.inference_only = True
    torch.manual_seed(0)
    model = PiperVitsModel(config).eval()
    assert all(isinstance(b, ResBlock2) for b in model.decoder.resblocks)
    assert not hasattr(model, "posterior_encoder")
    model.save_pretrained(tmp_path)
    loaded: Any = PiperVitsModel.from_pretrained(tmp_path, output_loading_info=True)
    reloaded, info = loaded
    assert not info["missing_keys"] and not info["unexpected_keys"]
    ids = torch.tensor([[1, 0, 5, 0, 7, 0, 9, 0, 2]])
    with torch.inference_mode():
        a, b = model(input_ids=ids), reloaded.eval()(input_ids=ids)
    assert a.sequence_lengths.tolist() == b.sequence_lengths.tolist()
    assert torch.equal(a.waveform, b.waveform)


def test_import_piper_refuses_bad_input(tmp_path: Path, joe_files: tuple[Path, Path],
                                        capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    bad_config = tmp_path / "bad.json"
    bad_config.write_text(json.dumps({"audio": {}}))
    cases = [
        ([str(tmp_path / "nope.onnx"), str(joe_files[1]), str(tmp_path / "o1")], "no such file"),
        ([str(joe_files[0]), str(joe_files[1]), str(tmp_path / "full")], "not empty"),
        ([str(joe_files[0]), str(bad_config), str(tmp_path / "o2")], "not a Piper voice config"),
    ]
    for args, message in cases:
        with pytest.raises(SystemExit) as exited:
            main(["voices", "import-piper", *args])
        assert exited.value.code == 1
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1
    assert not (tmp_path / "o2").exists() or not any((tmp_path / "o2").iterdir())


def test_convert_refuses_a_non_piper_onnx(tmp_path: Path, joe_files: tuple[Path, Path]) -> None:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"], name="id")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    onnx.save(helper.make_model(graph), str(tmp_path / "other.onnx"))
    from worker.piper import convert_piper

    with pytest.raises(PermanentError, match="does not look like a Piper VITS voice"):
        convert_piper(tmp_path / "other.onnx", joe_files[1], tmp_path / "out")


# --------------------------------------------------------------------------- multi-speaker Piper voices

# Max absolute sample difference, converted PyTorch model vs Piper's ONNX (ONNX Runtime), noise off, on the
# tiny multi-speaker voice: measured ~5e-8 per speaker (float32 summation order); its peaks are 0.03-0.1.
MULTI_MAX_ABS_DIFF = 1e-5


@pytest.fixture(scope="module")
def multi_files(tmp_path_factory: pytest.TempPathFactory) -> PiperFiles:
    return build_piper_multispeaker(tmp_path_factory.mktemp("piper-multi"), seed=3)


@pytest.fixture(scope="module")
def multi_folder(multi_files: PiperFiles, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny multi-speaker voice converted through the real CLI, inside the test voice directories."""
    out = tmp_path_factory.mktemp("multi-imported") / "tiny"
    assert out.resolve().is_relative_to(Path(TEST_VOICE_DIRS).resolve())  # pytest's temp dir is under it
    main(["voices", "import-piper", str(multi_files.onnx_path), str(multi_files.config_path), str(out)])
    return out


@functools.cache
def _onnx_session(onnx_path: Path) -> Any:
    import onnxruntime

    return onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])


def _onnx_speaker_waveform(onnx_path: Path, ids: list[int], speaker_id: int) -> np.ndarray:
    out = _onnx_session(onnx_path).run(None, {"input": np.array([ids], dtype=np.int64),
                             "input_lengths": np.array([len(ids)], dtype=np.int64),
                             "scales": np.array([0.0, 1.0, 0.0], dtype=np.float32),
                             "sid": np.array([speaker_id], dtype=np.int64)})[0]
    return np.asarray(out, dtype=np.float32).reshape(-1)


def test_multispeaker_voice_converts_and_matches_onnx_per_speaker(multi_folder: Path,
                                                                  multi_files: PiperFiles) -> None:
    from worker.voices import load_piper_folder

    voice = load_piper_folder(multi_folder)
    assert (voice.model.config.num_speakers, voice.model.config.speaker_embedding_size) == (len(SPEAKERS), 8)
    voice.model.noise_scale = voice.model.noise_scale_duration = 0.0
    for text in TEXTS:
        ids = voice.encode(text).ids
        waves = {}
        for speaker_id in SPEAKERS.values():
            expected = _onnx_speaker_waveform(multi_files.onnx_path, ids, speaker_id)
            with torch.inference_mode():
                out = voice.model(input_ids=torch.tensor([ids]), speaker_id=speaker_id)
            got = out.waveform[0, : out.sequence_lengths[0]].numpy()
            assert got.shape == expected.shape, speaker_id
            assert float(np.abs(got - expected).max()) < MULTI_MAX_ABS_DIFF, speaker_id
            assert float(np.abs(got).max()) > 0.01  # not two silences agreeing
            waves[speaker_id] = got
        # every speaker sounds different: another length, or other samples over the common length
        for a in waves:
            for b in waves:
                n = min(len(waves[a]), len(waves[b]))
                assert a == b or len(waves[a]) != len(waves[b]) or \
                    float(np.abs(waves[a][:n] - waves[b][:n]).max()) > 1e-3, (a, b)


def test_multispeaker_folder_names_its_speakers_and_refuses_unknown_ones(
        multi_folder: Path, multi_files: PiperFiles, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from schemas.voices import resolve_voice_name

    main(["voices", "import-piper", str(multi_files.onnx_path), str(multi_files.config_path), str(tmp_path / "v")])
    assert "3 speakers: p3922 (0), p8699 (1), narrator (2); pick one with" in capsys.readouterr().out
    info = resolve_voice_name(f"{multi_folder}#p8699")
    assert (info.speaker_id, info.num_speakers, info.speakers) == (1, 3, SPEAKERS)
    assert resolve_voice_name(f"{multi_folder}#2").speaker_id == SPEAKERS["narrator"]
    (tmp_path / "story.txt").write_text("Hello there.", encoding="utf-8")
    monkeypatch.setenv("TTSFLEET_DATABASE_URL", f"sqlite:///{tmp_path / 'db.sqlite'}")
    monkeypatch.setenv("TTSFLEET_OUTPUT_DIR", str(tmp_path / "out"))
    for speaker in ("nobody", "3"):
        with pytest.raises(SystemExit) as exited:
            main(["submit", str(tmp_path / "story.txt"), "--voice", f"{multi_folder}#{speaker}"])
        assert exited.value.code == 1
        err = capsys.readouterr().err
        assert f"no speaker '{speaker}'" in err and "p3922 (0), p8699 (1), narrator (2)" in err
        assert err.count("\n") == 1


def test_convert_refuses_a_speaker_map_that_does_not_fit_the_model(multi_files: PiperFiles, tmp_path: Path) -> None:
    from worker.piper import convert_piper

    config = json.loads(multi_files.config_path.read_text(encoding="utf-8"))
    for change, message in (({"num_speakers": 5}, "num_speakers is 5 but the model has 3"),
                            ({"speaker_id_map": {"x": 3}}, "speaker_id_map must map names to ids 0-2")):
        bad = tmp_path / "bad.onnx.json"
        bad.write_text(json.dumps({**config, **change}), encoding="utf-8")
        with pytest.raises(PermanentError, match=message):
            convert_piper(multi_files.onnx_path, bad, tmp_path / "out")


def test_a_job_on_the_torch_runtime_speaks_the_named_speaker(multi_folder: Path, multi_files: PiperFiles,
                                                             tmp_path: Path) -> None:
    """`FOLDER#p8699` through submit and a worker forced onto torch: each chunk is what Piper's ONNX says
    with `sid` 1, and a chunk without a speaker gets speaker 0, as Piper's ONNX does. One chunk per batch
    (token budget 1): in a padded batch the decoder's bias and speaker offset reach a shorter item's last
    frames, so only unbatched audio is sample-exact against a one-item ONNX run."""
    from producer.submit import submit
    from schemas.db import open_store
    from schemas.messages import JobRequest
    from schemas.settings import ProducerSettings, WorkerSettings
    from schemas.status import JobStatus, Runtime
    from worker.engine import ChunkAudio, ChunkInput
    from worker.runtime import WorkerRuntime

    url = f"sqlite:///{tmp_path / 'store.db'}"
    store = open_store(url)
    producer = ProducerSettings(database_url=url, output_dir=tmp_path / "out", voice_dirs=TEST_VOICE_DIRS,
                                max_chunk_chars=40)
    text = "The door opened. Who is there, asked the guard. Nobody answered at all."
    [job] = submit([JobRequest(text=text, voice=f"{multi_folder}#p8699")], producer, store,
                   publisher=None)
    settings = WorkerSettings(database_url=url, output_dir=tmp_path / "out", device="cpu", runtime="torch",
                              voice=str(multi_folder), deterministic=True, voices_cache_dir=tmp_path / "cache",
                              voice_dirs=TEST_VOICE_DIRS, token_budget=1)
    runtime = WorkerRuntime.start(settings)
    engine = runtime.engine_for(str(multi_folder))
    assert engine.runtime == Runtime.TORCH
    said: list[tuple[ChunkInput, np.ndarray]] = []
    original = engine.synthesize

    def recording(chunks, on_chunk):  # type: ignore[no-untyped-def]
        by_idx = {c.idx: c for c in chunks}

        def keep(audio: ChunkAudio) -> object:
            said.append((by_idx[audio.idx], audio.samples))
            return on_chunk(audio)

        return original(chunks, keep)

    engine.synthesize = recording  # type: ignore[method-assign]
    assert runtime.run_job(job.id).status == JobStatus.SUCCEEDED
    assert len(said) >= 2 and {chunk.speaker_id for chunk, _ in said} == {1}
    for chunk, samples in said:
        expected = _onnx_speaker_waveform(multi_files.onnx_path, engine.voice.encode(chunk.text).ids, 1)
        assert samples.shape == expected.shape
        assert float(np.abs(samples - expected).max()) < MULTI_MAX_ABS_DIFF
    ids = engine.voice.encode("Nobody answered.").ids
    [default], _ = engine.forward([ids], None)
    assert default is not None
    np.testing.assert_allclose(default, _onnx_speaker_waveform(multi_files.onnx_path, ids, 0), atol=MULTI_MAX_ABS_DIFF)
    del engine.synthesize
    store.dispose()


def test_an_imported_folder_runs_on_onnxruntime_and_reloads_without_torch(multi_folder: Path, multi_files: PiperFiles,
                                                                        tmp_path: Path) -> None:
    """A `voices import-piper` folder (no ONNX model of its own) is exported at its first onnxruntime load;
    its later loads take the cached, checked graph without importing torch, and every speaker still
    sounds as Piper's own graph makes it."""
    import subprocess
    import sys

    from worker.device import detect_device
    from worker.engine import ChunkAudio, ChunkInput, start_engine
    from worker.precision import choose_policy
    from worker.voices import load_voice

    cache = tmp_path / "cache"
    voice = load_voice(str(multi_folder), cache, onnx=True)
    assert voice.model is None and voice.onnx is not None and voice.num_speakers == len(SPEAKERS)
    cpu = detect_device("cpu")
    engine = start_engine(voice, cpu, choose_policy(cpu, runtime="onnxruntime"), deterministic=True, threads=1)
    for speaker in (0, 2):
        got: list[ChunkAudio] = []
        engine.synthesize([ChunkInput(0, "Nobody answered.", 1, speaker)], got.append)
        expected = _onnx_speaker_waveform(multi_files.onnx_path, voice.encode("Nobody answered.").ids, speaker)
        assert len(got[0].samples) == len(expected)
        np.testing.assert_allclose(got[0].samples, expected, atol=MULTI_MAX_ABS_DIFF * 10)
    probe = ("import sys; from pathlib import Path; from worker.voices import load_voice; "
             f"v = load_voice({str(multi_folder)!r}, Path({str(cache)!r}), onnx=True); "
             "print('torch' in sys.modules, v.model is None, v.onnx.path.name, v.num_speakers)")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "True", voice.onnx.path.name, str(len(SPEAKERS))]
