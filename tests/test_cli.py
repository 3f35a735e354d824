"""The command line as users meet it: every contract command exists, errors are one line, --json is JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

TTSFLEET = str(Path(sys.executable).parent / "ttsfleet")
CONTRACT_COMMANDS = [["run"], ["submit"], ["status"], ["wait"], ["cancel"], ["worker"], ["doctor"], ["workers"],
                     ["stats"], ["voices"], ["voices", "import-piper"]]


def cli(*args: str, env: dict[str, str] | None = None, stdin: str | None = None,
        cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([TTSFLEET, *args], capture_output=True, text=True, env=env, input=stdin, cwd=cwd,
                          timeout=180, check=False)


@pytest.mark.parametrize("command", CONTRACT_COMMANDS, ids=" ".join)
def test_every_contract_command_has_help(command: list[str]) -> None:
    result = cli(*command, "--help")
    assert result.returncode == 0, result.stderr
    assert "Usage:" in result.stdout


def test_help_and_schemas_do_not_import_torch() -> None:
    code = ("import sys; from producer.cli import app; import schemas, producer.submit, producer.jobs;"
            "print(sorted(m for m in ('torch', 'transformers', 'celery') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    import os

    return {**os.environ, "TTSFLEET_DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite'}",
            "TTSFLEET_OUTPUT_DIR": str(tmp_path / "out"), **extra}


@pytest.mark.parametrize(("args", "stdin", "message"), [
    (["status", "nope"], None, "no such job: nope"),
    (["submit", "-"], "   \n\t ", "nothing to speak"),
    (["submit", "missing-file.txt"], None, "missing-file.txt"),
    (["doctor", "--simulate", "Tesla T4:7.5:16", "--precision", "bf16"], None, "bf16"),
    (["submit", "-", "--voice", "piper:nobody"], "Hello.", "unknown voice"),
    (["retry", "nope"], None, "no such job: nope"),
    (["status", "--limit", "0"], None, "--limit must be 1..1000"),
    (["status", "--since", "last tuesday"], None, "cannot read time"),
    (["submit", "-", "--broker-url", "redis://:s3cret@127.0.0.1:1/0"], "Hello there.", "redis://:***@127.0.0.1:1/0"),
])
def test_bad_input_gets_one_line_and_a_nonzero_exit(tmp_path: Path, args: list[str], stdin: str | None,
                                                    message: str) -> None:
    result = cli(*args, env=_env(tmp_path), stdin=stdin, cwd=tmp_path)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error:") and message in lines[0]
    assert "Traceback" not in result.stderr


def test_submit_with_the_broker_down_stores_nothing(tmp_path: Path) -> None:
    env = _env(tmp_path, TTSFLEET_BROKER_URL="redis://127.0.0.1:1/0")
    result = cli("submit", "-", env=env, stdin="The market opens at nine.", cwd=tmp_path)
    assert result.returncode == 1 and "cannot reach the broker" in result.stderr
    status = cli("status", "--json", env=env, cwd=tmp_path)
    assert json.loads(status.stdout) == []


@pytest.mark.slow
def test_run_json_prints_only_json(tmp_path: Path, tiny_vits_dir: Path) -> None:
    env = _env(tmp_path, TTSFLEET_VOICE=str(tiny_vits_dir))
    result = cli("run", "-", "--json", env=env, stdin="One short line. And another one.", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    [view] = json.loads(result.stdout)
    assert view["status"] == "succeeded" and view["chunks_done"] == view["chunks_total"]
    assert Path(view["audio_path"]).is_file() and view["audio_s"] > 0


def test_a_setting_that_does_not_parse_is_one_line_naming_it() -> None:
    from schemas.errors import InvalidInput
    from schemas.settings import WorkerSettings

    with pytest.raises(InvalidInput) as raised:
        WorkerSettings.from_env({"TTSFLEET_LEASE_S": "soon"})
    assert "lease_s" in str(raised.value) and "TTSFLEET_LEASE_S" in str(raised.value)
    assert "\n" not in str(raised.value)
    assert WorkerSettings.from_env({"TTSFLEET_PRECISION": "bf16"}).precision == "bf16"


@pytest.mark.parametrize("args, option", [(["worker", "--join-jobs", "0"], "--join-jobs"),
                                          (["worker", "--threads", "0"], "--threads")])
def test_an_option_out_of_range_is_a_usage_error_naming_the_option(args: list[str], option: str) -> None:
    done = cli(*args)
    assert done.returncode == 2, done.stderr
    assert f"Invalid value for '{option}'" in done.stderr and "Traceback" not in done.stderr


def test_run_with_output_redirected_reports_progress_as_lines(tmp_path: Path) -> None:
    """Redirected `run` output (a file, a pipe) gets plain progress lines on stderr, not silence."""
    env = _env(tmp_path, TTSFLEET_VOICE="null:")
    jobs = "".join(json.dumps({"text": f"Notice {n}. The office opens at nine."}) + "\n" for n in range(3))
    (tmp_path / "jobs.jsonl").write_text(jobs)
    result = cli("run", "jobs.jsonl", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert "1/3 done (" in result.stderr and lines[-1].startswith("3/3 done ("), result.stderr
