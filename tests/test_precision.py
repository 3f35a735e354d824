"""The precision policy table, refusals, fallbacks, device parsing and `ttsfleet doctor`."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

import pytest

from schemas.errors import InvalidInput, PrecisionRefused
from schemas.status import Precision
from worker.device import DeviceInfo, detect_device, parse_simulated
from worker.precision import (
    VITS_FP32_MODULES,
    apply_process_settings,
    arch_supported,
    choose_policy,
    describe,
    safer,
)

# (simulate spec, dtype, tf32, a word the reason must contain)
TABLE = [
    ("Tesla P40:6.1:24", "float32", False, "Pascal"),
    ("Tesla P100-PCIE-16GB:6.0:16", "float32", False, "Pascal"),
    ("Tesla V100-SXM2-32GB:7.0:32", "float16", False, "7.0"),
    ("Tesla T4:7.5:16", "float16", False, "7.5"),
    ("NVIDIA GeForce RTX 2080 Ti:7.5:11", "float16", False, "7.5"),
    ("NVIDIA GeForce GTX 1660 SUPER:7.5:6", "float32", False, "GTX 16xx"),
    ("NVIDIA GeForce GTX 1660 Ti:7.5:6", "float32", False, "NaN"),
    ("NVIDIA GeForce GTX 1650:7.5:4", "float32", False, "GTX 16xx"),
    ("NVIDIA GeForce RTX 3060:8.6:12", "bfloat16", True, "8.6"),
    ("NVIDIA A100-SXM4-80GB:8.0:80", "bfloat16", True, "bf16"),
    ("NVIDIA GeForce RTX 4090:8.9:24", "bfloat16", True, "TF32"),
    ("NVIDIA H100 80GB HBM3:9.0:80", "bfloat16", True, "9.0"),
    ("cpu", "float32", False, "CPU"),
    ("cpu::32", "float32", False, "CPU"),
    ("mps::16", "float32", False, "MPS"),
]


@pytest.mark.parametrize(("spec", "dtype", "tf32", "word"), TABLE)
def test_policy_table(spec: str, dtype: str, tf32: bool, word: str) -> None:
    device = parse_simulated(spec)
    policy = choose_policy(device)
    assert (policy.dtype, policy.tf32) == (dtype, tf32)
    assert word in policy.reason
    assert policy.mode == ("fp32" if dtype == "float32" else "autocast")
    assert policy.keep_fp32 == (() if dtype == "float32" else VITS_FP32_MODULES)
    assert policy.run_on == ("cuda" if device.backend == "cuda" else "cpu")
    assert str(policy.torch_dtype()) == f"torch.{dtype}"


@pytest.mark.parametrize(("spec", "precision", "words"), [
    ("Tesla T4:7.5:16", "bf16", ["bf16 refused", "Tesla T4", "7.5", ">= 8.0"]),
    ("NVIDIA GeForce RTX 2080:7.5:8", Precision.BF16, ["bf16 refused"]),
    ("Tesla V100-SXM2-32GB:7.0:32", "bf16", ["bf16 refused"]),
    ("Tesla P40:6.1:24", "bf16", ["bf16 refused"]),
    ("NVIDIA GeForce GTX 1660 SUPER:7.5:6", "fp16", ["fp16 refused", "NaN"]),
    ("NVIDIA GeForce GTX 1660 SUPER:7.5:6", "bf16", ["bf16 refused"]),
    ("Tesla K80:3.7:12", "fp16", ["fp16 refused"]),
    ("cpu", "bf16", ["bf16 refused", "CPU"]),
    ("cpu", "fp16", ["fp16 refused"]),
    ("mps::16", "fp16", ["fp16 refused", "MPS"]),
    ("Tesla T4:7.5:16", "fp8", ["unknown precision"]),
])
def test_refusals_are_one_line(spec: str, precision: str, words: list[str]) -> None:
    with pytest.raises(PrecisionRefused) as caught:
        choose_policy(parse_simulated(spec), precision)
    message = str(caught.value)
    assert "\n" not in message
    for word in words:
        assert word in message


def test_forced_precisions_the_card_can_run() -> None:
    a100 = parse_simulated("NVIDIA A100-SXM4-80GB:8.0:80")
    assert (choose_policy(a100, "fp16").dtype, choose_policy(a100, "fp16").tf32) == ("float16", True)
    strict = choose_policy(a100, "fp32")
    assert (strict.dtype, strict.tf32, strict.mode, strict.requested) == ("float32", False, "fp32", "fp32")
    t4 = parse_simulated("Tesla T4:7.5:16")
    assert choose_policy(t4, "FP16").dtype == "float16"
    assert choose_policy(t4, "fp32").dtype == "float32"
    assert choose_policy(parse_simulated("Tesla P100:6.0:16"), "fp16").dtype == "float16"
    assert choose_policy(parse_simulated("cpu"), "fp32").dtype == "float32"


def test_safer_chain_ends_at_strict_fp32() -> None:
    bf16 = choose_policy(parse_simulated("NVIDIA H100:9.0:80"))
    fp32_tf32 = safer(bf16)
    assert fp32_tf32 is not None and (fp32_tf32.dtype, fp32_tf32.tf32, fp32_tf32.mode) == ("float32", True, "fp32")
    assert fp32_tf32.keep_fp32 == () and "bfloat16" in fp32_tf32.reason
    strict = safer(fp32_tf32)
    assert strict is not None and (strict.dtype, strict.tf32) == ("float32", False)
    assert safer(strict) is None
    fp16 = choose_policy(parse_simulated("Tesla T4:7.5:16"))
    after = safer(fp16)
    assert after is not None and (after.dtype, after.tf32) == ("float32", False)
    assert safer(after) is None


OLD_BUILD = ("sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86", "sm_90")


@pytest.mark.parametrize(("capability", "arch_list", "ok"), [
    ((8, 9), OLD_BUILD, True),  # sm_86 cubin runs on 8.9
    ((12, 0), OLD_BUILD, False),  # Blackwell consumer card on an older build
    ((12, 0), (*OLD_BUILD, "compute_90"), True),  # PTX JIT
    ((9, 0), ("sm_90a",), True),
    ((10, 0), ("sm_90a",), False),
    ((6, 1), ("sm_70", "sm_75"), False),
    ((12, 0), ("sm_120",), True),
    ((8, 6), (), False),
])
def test_arch_list(capability: tuple[int, int], arch_list: tuple[str, ...], ok: bool) -> None:
    assert arch_supported(capability, arch_list) is ok


def test_build_without_kernels_for_the_card_is_refused() -> None:
    card = DeviceInfo(backend="cuda", name="NVIDIA GeForce RTX 5090", capability=(12, 0), memory_bytes=32 << 30,
                      index=0, torch_device="cuda:0", arch_list=OLD_BUILD)
    with pytest.raises(PrecisionRefused, match="no kernels for NVIDIA GeForce RTX 5090"):
        choose_policy(card, "fp32")
    assert choose_policy(replace(card, arch_list=(*OLD_BUILD, "sm_120"))).dtype == "bfloat16"


@pytest.mark.parametrize("spec", ["T4:7.5", "T4:seven:16", "T4:7.5:lots", "cpu:7.5:8", ":7.5:16", "T4:7:16",
                                  "T4:7.5:-1", ""])
def test_bad_simulate_syntax(spec: str) -> None:
    with pytest.raises(InvalidInput, match="--simulate") as caught:
        parse_simulated(spec)
    assert "\n" not in str(caught.value)


def test_parse_simulated_fields() -> None:
    card = parse_simulated("NVIDIA GeForce RTX 4090:8.9:24")
    assert (card.name, card.capability, card.capability_str, card.backend) == (
        "NVIDIA GeForce RTX 4090", (8, 9), "8.9", "cuda")
    assert card.memory_bytes == 24 << 30 and card.memory_gb == 24.0 and card.simulated
    cpu = parse_simulated("CPU::16")
    assert (cpu.backend, cpu.capability, cpu.capability_str, cpu.torch_device) == ("cpu", None, None, "cpu")


def test_detect_device_here() -> None:
    cpu = detect_device("cpu")
    assert cpu.backend == "cpu" and cpu.torch_device == "cpu" and not cpu.simulated
    assert cpu.memory_bytes is not None and cpu.memory_bytes > 0
    for bad in ("cuda:99", "tpu", "cuda:x"):
        with pytest.raises(InvalidInput):
            detect_device(bad)
    assert detect_device("auto").backend in ("cuda", "cpu", "mps")


def test_apply_process_settings() -> None:
    import torch

    before = torch.get_float32_matmul_precision()
    try:
        a100 = parse_simulated("NVIDIA A100:8.0:80")
        apply_process_settings(choose_policy(a100), detect_device("cpu"))
        assert torch.get_float32_matmul_precision() == "high"
        assert torch.backends.cudnn.benchmark is False
        apply_process_settings(choose_policy(a100, "fp32"), detect_device("cpu"))
        assert torch.get_float32_matmul_precision() == "highest"
    finally:
        torch.set_float32_matmul_precision(before)


def test_describe_has_the_contract_keys() -> None:
    device = parse_simulated("NVIDIA GeForce RTX 4090:8.9:24")
    report = describe(device, choose_policy(device))
    assert {"device", "name", "capability", "memory_gb", "dtype", "tf32", "reason"} <= set(report)
    assert (report["capability"], report["memory_gb"], report["dtype"], report["tf32"]) == (
        "8.9", 24.0, "bfloat16", True)


def _doctor(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    from producer.cli import main

    try:
        main(["doctor", *args])
        code = 0
    except SystemExit as done:
        code = int(done.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


DONE_WHEN = [
    ("Tesla P40:6.1:24", "float32", False), ("NVIDIA GeForce GTX 1660 SUPER:7.5:6", "float32", False),
    ("cpu", "float32", False), ("Tesla T4:7.5:16", "float16", False), ("Tesla V100:7.0:32", "float16", False),
    ("NVIDIA A100-SXM4-40GB:8.0:40", "bfloat16", True), ("NVIDIA GeForce RTX 3060:8.6:12", "bfloat16", True),
    ("NVIDIA GeForce RTX 4090:8.9:24", "bfloat16", True), ("NVIDIA H100 80GB HBM3:9.0:80", "bfloat16", True),
]


@pytest.mark.parametrize(("spec", "dtype", "tf32"), DONE_WHEN)
def test_doctor_json_simulated(spec: str, dtype: str, tf32: bool, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _doctor(["--json", "--simulate", spec], capsys)
    assert code == 0, err
    report = json.loads(out)
    assert (report["dtype"], report["tf32"]) == (dtype, tf32)
    assert report["reason"] and report["simulated"] is True
    assert report["capability"] == (None if spec == "cpu" else spec.split(":")[1])


def test_doctor_table_and_local_device(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _doctor(["--simulate", "Tesla T4:7.5:16"], capsys)
    assert code == 0 and "float16" in out and "Tesla T4" in out and "reason" in out
    code, out, _ = _doctor(["--json", "--device", "cpu"], capsys)
    assert code == 0 and json.loads(out)["dtype"] == "float32" and json.loads(out)["capability"] is None


@pytest.mark.parametrize("args", [["--simulate", "Tesla T4:7.5:16", "--precision", "bf16"],
                                  ["--json", "--simulate", "Tesla T4:7.5:16", "--precision", "bf16"],
                                  ["--device", "cpu", "--precision", "fp16"],
                                  ["--simulate", "T4:7.5"]])
def test_doctor_refuses_with_one_line(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _doctor(args, capsys)
    assert code != 0 and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1


def test_doctor_console_command_exit_code() -> None:
    """The installed entry point, as a user runs it."""
    done = subprocess.run([sys.executable, "-c", "from producer.cli import main; main()", "doctor",
                           "--simulate", "Tesla T4:7.5:16", "--precision", "bf16"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and done.stdout == ""
    assert done.stderr.strip() == "error: bf16 refused on Tesla T4 (compute capability 7.5): bf16 needs >= 8.0"


# --- runtime: onnxruntime on CPUs, torch on GPUs ------------------------------------------------------

def test_cpu_policy_picks_onnxruntime_when_installed() -> None:
    policy = choose_policy(parse_simulated("cpu::8"))
    assert policy.runtime == "onnxruntime" and "onnxruntime" in policy.reason
    assert describe(parse_simulated("cpu::8"), policy)["runtime"] == "onnxruntime"


def test_gpu_policy_runs_torch_and_refuses_onnxruntime() -> None:
    t4 = parse_simulated("Tesla T4:7.5:16")
    assert choose_policy(t4).runtime == "torch"
    assert choose_policy(t4, runtime="torch").runtime == "torch"
    with pytest.raises(PrecisionRefused, match=r"^runtime .onnxruntime. refused on Tesla T4") as caught:
        choose_policy(t4, runtime="onnxruntime")
    assert "\n" not in str(caught.value)


def test_forced_torch_and_unknown_runtime_on_cpu() -> None:
    cpu = parse_simulated("cpu")
    assert choose_policy(cpu, runtime="torch").runtime == "torch"
    assert choose_policy(cpu, runtime="ONNXRuntime").runtime == "onnxruntime"
    with pytest.raises(PrecisionRefused, match="unknown runtime 'tensorrt'"):
        choose_policy(cpu, runtime="tensorrt")


def test_cpu_without_onnxruntime_falls_back_to_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    import worker.precision

    monkeypatch.setattr(worker.precision, "onnxruntime_installed", lambda: False)
    cpu = parse_simulated("cpu")
    policy = choose_policy(cpu)
    assert policy.runtime == "torch" and "onnxruntime is not installed" in policy.reason
    with pytest.raises(PrecisionRefused, match="onnxruntime package is not installed"):
        choose_policy(cpu, runtime="onnxruntime")


def test_doctor_json_reports_the_runtime() -> None:
    out = subprocess.run([sys.executable, "-m", "producer.cli", "doctor", "--json", "--simulate", "cpu::4"],
                         capture_output=True, text=True, check=True, timeout=120).stdout
    assert json.loads(out)["runtime"] == "onnxruntime"
    out = subprocess.run([sys.executable, "-m", "producer.cli", "doctor", "--json", "--simulate", "cpu::4",
                          "--runtime", "torch"], capture_output=True, text=True, check=True, timeout=120).stdout
    assert json.loads(out)["runtime"] == "torch"
