"""Piper -> transformers conversion: exactness against onnxruntime, clean loading, ResBlock2, text -> ids."""

from __future__ import annotations

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
