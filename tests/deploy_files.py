"""Reading the files under deploy/ as the tools that run them would: compose services, Kubernetes
documents, systemd units (the few directives ttsfleet's units use), and their command lines."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
K8S = DEPLOY / "k8s"
CONTRACT_ENV = ("TTSFLEET_BROKER_URL", "TTSFLEET_DATABASE_URL", "TTSFLEET_OUTPUT_DIR")
TTSFLEET = str(Path(sys.executable).parent / "ttsfleet")


def tool(name: str) -> str:
    """The path of a command-line tool the deploy tests need; fails (never skips) when it is missing."""
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        pytest.fail(f"{name} is required for the deploy tests (make services / pip install '.[test]')",
                    pytrace=False)
    return found


def compose_config() -> dict[str, Any]:
    """The compose file as docker-compose resolves it (anchors, merges, defaults)."""
    done = subprocess.run([tool("docker-compose"), "-f", str(DEPLOY / "docker-compose.yml"), "config"],
                          capture_output=True, text=True, check=False, timeout=60)
    assert done.returncode == 0, done.stderr
    config: dict[str, Any] = yaml.safe_load(done.stdout)
    return config


def k8s_documents() -> list[tuple[Path, dict[str, Any]]]:
    return [(path, doc) for path in sorted(K8S.glob("*.yaml"))
            for doc in yaml.safe_load_all(path.read_text()) if doc]


def systemd_unit(name: str) -> dict[str, list[str]]:
    """`Key=value` lines of a unit (comments and sections dropped), each key with all its values."""
    unit: dict[str, list[str]] = {}
    for line in (DEPLOY / name).read_text().splitlines():
        if "=" in line and not line.lstrip().startswith(("#", "[")):
            key, value = line.split("=", 1)
            unit.setdefault(key.strip(), []).append(value.strip())
    return unit


def unit_command(name: str, instance: str, host: str) -> tuple[list[str], dict[str, str]]:
    """A templated unit's ExecStart (this venv's `ttsfleet` in place of /opt's) and its Environment=,
    with systemd's %i and %H specifiers filled in."""
    unit = systemd_unit(name)
    [exec_start] = unit["ExecStart"]
    argv = shlex.split(exec_start.replace("%i", instance).replace("%H", host))
    assert argv[0] == "/opt/ttsfleet/.venv/bin/ttsfleet"
    env = dict(v.replace("%i", instance).replace("%H", host).split("=", 1) for v in unit.get("Environment", []))
    return [TTSFLEET, *argv[1:]], env


def compose_command(service: str) -> list[str]:
    """A compose service's command as the container runs it: the image's ENTRYPOINT (`ttsfleet`) + command."""
    command = compose_config()["services"][service]["command"]
    return [TTSFLEET, *command]
