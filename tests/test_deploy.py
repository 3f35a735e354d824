"""deploy/ checked with the real tools (docker-compose, hadolint, kubernetes-validate, offline) and its
invariants asserted: one GPU per worker, the contract's settings, probes, grace periods, the autoscaler's
query. No container engine or cluster is needed; the command lines themselves run in test_storage.py
(compose's CPU worker) and test_netns.py (the systemd units)."""

from __future__ import annotations

import subprocess
from typing import Any

import kubernetes_validate
import pytest

from schemas.backlog import backlog_sql
from tests.deploy_files import CONTRACT_ENV, DEPLOY, compose_config, k8s_documents, systemd_unit, tool
from worker.serve import STOP_GRACE_S

K8S_VERSION = "1.33.0"  # a version kubernetes-validate ships schemas for
KEDA_KINDS = {"ScaledObject", "TriggerAuthentication"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return compose_config()


def test_hadolint_passes_the_dockerfile() -> None:
    done = subprocess.run([tool("hadolint"), str(DEPLOY / "Dockerfile")], capture_output=True, text=True,
                          check=False, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_dockerfile_targets_and_non_root_user() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    assert " AS gpu" in text and " AS slim" in text and "ARG TORCH_INDEX_URL" in text
    assert "cu126" in text  # the documented Pascal-capable wheel
    assert text.count("USER 10001:10001") == 2 and "bundled_voice_folder" in text


def test_compose_services_and_health_checks(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"redis", "postgres", "migrate", "worker-cpu", "serve", "flower"} <= set(services)
    for name, service in services.items():
        assert "healthcheck" in service, f"{name} has no health check"
    redis_cmd = services["redis"]["command"]
    assert "--appendonly" in redis_cmd and redis_cmd[redis_cmd.index("--appendonly") + 1] == "yes"
    assert redis_cmd[redis_cmd.index("--maxmemory-policy") + 1] == "noeviction"
    assert services["serve"]["command"] == ["serve", "--host", "0.0.0.0", "--port", "8000"]
    assert services["migrate"]["command"] == ["migrate"]


def test_compose_runs_one_worker_per_gpu(compose: dict[str, Any]) -> None:
    gpu_workers = {n: s for n, s in compose["services"].items() if n.startswith("worker-gpu")}
    assert len(gpu_workers) >= 2
    seen: list[str] = []
    for name, service in gpu_workers.items():
        [device] = service["deploy"]["resources"]["reservations"]["devices"]
        assert len(device["device_ids"]) == 1, f"{name} must own exactly one GPU"
        seen += device["device_ids"]
        assert service["command"][:3] == ["worker", "--device", "cuda:0"]  # the one card the container sees
        assert service["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        _assert_grace(int(service["stop_grace_period"].rstrip("s")))
    assert len(seen) == len(set(seen)), "two workers share a GPU"
    cpu = compose["services"]["worker-cpu"]["command"]
    gpu = gpu_workers["worker-gpu0"]["command"]
    assert cpu == [*gpu[:2], "cpu", *gpu[3:]]  # the GPU line is the CPU line (which runs in the tests) on cuda:0


def test_compose_workers_get_the_contract_settings(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        if name.startswith("worker") or name in ("serve", "migrate"):
            assert set(CONTRACT_ENV) <= set(service["environment"]), name


def test_every_kubernetes_manifest_validates_offline() -> None:
    checked = 0
    for path, doc in k8s_documents():
        if doc["kind"] in KEDA_KINDS:
            continue  # a CRD: kubernetes-validate has no schema for it (test_keda_scaled_object)
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as err:
            pytest.fail(f"{path.name}: {doc['kind']} {doc['metadata']['name']}: {err}")
        checked += 1
    assert checked >= 7


def _workers() -> list[dict[str, Any]]:
    return [doc for _, doc in k8s_documents() if doc["kind"] == "Deployment"
            and doc["metadata"]["labels"].get("app.kubernetes.io/component") == "worker"]


def _assert_grace(grace_s: int) -> None:
    assert grace_s > STOP_GRACE_S + 10, "the grace period must let the current chunk finish and the job go back"


def test_kubernetes_workers_one_gpu_each_with_probes() -> None:
    workers = _workers()
    assert len({w["spec"]["template"]["spec"]["nodeSelector"]["nvidia.com/gpu.product"] for w in workers}) >= 2
    for deployment in workers:
        pod = deployment["spec"]["template"]["spec"]
        [container] = pod["containers"]
        assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
        assert "nvidia.com/gpu.product" in pod["nodeSelector"]
        _assert_grace(pod["terminationGracePeriodSeconds"])
        assert pod["securityContext"]["runAsNonRoot"] is True
        args = container["args"]
        health = args[args.index("--health-dir") + 1]
        assert container["readinessProbe"]["exec"]["command"] == ["test", "-f", f"{health}/ready"]
        assert f"{health}/heartbeat" in " ".join(container["livenessProbe"]["exec"]["command"])
        assert container["startupProbe"]["exec"]["command"] == ["test", "-f", f"{health}/ready"]
        env = {e["name"]: e for e in container["env"]}
        for name in ("TTSFLEET_BROKER_URL", "TTSFLEET_DATABASE_URL"):
            assert env[name]["valueFrom"]["secretKeyRef"]["name"] == "ttsfleet-secrets"


def test_kubernetes_migration_job_and_serve() -> None:
    docs = {(d["kind"], d["metadata"]["name"]): d for _, d in k8s_documents()}
    job = docs[("Job", "ttsfleet-migrate")]["spec"]["template"]["spec"]["containers"][0]
    assert job["args"] == ["migrate"]
    serve = docs[("Deployment", "ttsfleet-serve")]["spec"]["template"]["spec"]["containers"][0]
    assert serve["args"] == ["serve", "--host", "0.0.0.0", "--port", "8000"]
    assert serve["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert serve["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert "TTSFLEET_OUTPUT_DIR" in docs[("ConfigMap", "ttsfleet-config")]["data"]


def test_keda_scaled_object() -> None:
    """KEDA's CRDs are not in kubernetes-validate: the structure KEDA v2 requires is checked here."""
    docs = {(d["kind"], d["metadata"]["name"]): d for _, d in k8s_documents()}
    scaled = [d for (kind, _), d in docs.items() if kind == "ScaledObject"]
    assert scaled
    worker_names = {w["metadata"]["name"] for w in _workers()}
    for obj in scaled:
        assert obj["apiVersion"] == "keda.sh/v1alpha1"
        spec = obj["spec"]
        assert spec["scaleTargetRef"]["name"] in worker_names
        assert spec["minReplicaCount"] == 0 and spec["maxReplicaCount"] >= 1
        [trigger] = spec["triggers"]
        assert trigger["type"] == "postgresql"
        meta = trigger["metadata"]
        assert meta["query"] == backlog_sql()  # the very text `ttsfleet backlog --json` prints
        assert int(meta["targetQueryValue"]) >= 1 and all(isinstance(v, str) for v in meta.values())
        auth = docs[("TriggerAuthentication", trigger["authenticationRef"]["name"])]
        [ref] = auth["spec"]["secretTargetRef"]
        assert ref["parameter"] == "connection" and ref["name"] == "ttsfleet-secrets"
        secret = docs[("Secret", "ttsfleet-secrets")]
        assert ref["key"] in secret["stringData"]


def test_systemd_units_drain_within_their_stop_timeout() -> None:
    for name in ("ttsfleet-worker@.service", "ttsfleet-cpu-worker@.service"):
        unit = systemd_unit(name)
        assert unit["KillSignal"] == ["SIGTERM"]
        _assert_grace(int(unit["TimeoutStopSec"][0]))
        assert unit["EnvironmentFile"] == ["/etc/ttsfleet/worker.env"]
    gpu = systemd_unit("ttsfleet-worker@.service")
    assert "CUDA_VISIBLE_DEVICES=%i" in gpu["Environment"]  # one GPU per instance


def test_grafana_dashboard_uses_metrics_the_workers_export() -> None:
    import json
    import re

    from prometheus_client import generate_latest

    from worker.metrics import WorkerMetrics

    dashboard = json.loads((DEPLOY / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    used = {re.sub(r"_(total|bucket)$", "", name) for e in exprs for name in re.findall(r"ttsfleet_[a-z_]+", e)}
    metrics = WorkerMetrics(info={"card": "cpu"})
    metrics.job_finished("succeeded", audio_s=1.0, synth_s=0.5, chunks=2)
    metrics.sql_backlog.labels(queue="ttsfleet", status="queued").set(1)
    exported = set(re.findall(r"^# TYPE (ttsfleet_[a-z_]+)", generate_latest(metrics.registry).decode(), re.M))
    exported |= {"ttsfleet_queue_depth", "ttsfleet_broker_up"}  # read from the broker at scrape time
    assert used and used <= {re.sub(r"_(total|info)$", "", n) for n in exported} | exported, used - exported
    assert "ttsfleet_sql_backlog_jobs" in used and "ttsfleet_queue_depth" in used
