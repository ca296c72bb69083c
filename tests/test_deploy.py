"""Deployment files, checked offline: kustomize overlays against the Kubernetes schemas (strict) and our CRD
schemas, the PrometheusRule in sync with the alert rules, hadolint, systemd-analyze, docker-compose."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "k8s"


def _tool(name: str, *extra_dirs: Path) -> str:
    path = shutil.which(name) or next((str(d / name) for d in extra_dirs if (d / name).exists()), None)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is not installed, and CI must run the deployment checks (make setup installs it)")
        pytest.skip(f"{name} is not installed (make setup)")
    return path


def _gobin() -> Path:
    go = shutil.which("go")
    out = subprocess.run([go, "env", "GOPATH"], capture_output=True, text=True).stdout.strip() if go else ""
    return Path(out or Path.home() / "go") / "bin"


@pytest.fixture(scope="module", params=["dev", "prod"])
def overlay(request, tmp_path_factory) -> tuple[str, list[dict], Path]:
    kustomize = _tool("kustomize", _gobin())
    out = subprocess.run([kustomize, "build", str(K8S / "overlays" / request.param)], capture_output=True,
                         text=True, check=True).stdout
    path = tmp_path_factory.mktemp(request.param) / "all.yaml"
    path.write_text(out)
    return request.param, [d for d in yaml.safe_load_all(out) if d], path


def _validate(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kubernetes_validate", "--strict", "--quiet", str(path)],
                          capture_output=True, text=True)


def test_overlays_validate_strictly_against_kubernetes_schemas(overlay):
    name, docs, path = overlay
    core = [d for d in docs if not d["apiVersion"].startswith("monitoring.coreos.com")]
    only_core = path.with_name("core.yaml")
    only_core.write_text(yaml.safe_dump_all(core))
    proc = _validate(only_core)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy",
            "ServiceMonitor", "PrometheusRule", "PersistentVolumeClaim"} <= kinds
    assert sum(d["kind"] == "Service" for d in docs) == 2  # ClusterIP and headless


def test_a_misspelled_field_fails_validation(overlay, tmp_path):
    name, docs, _ = overlay
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    broken = json.loads(json.dumps(deployment))
    port = broken["spec"]["template"]["spec"]["containers"][0]["ports"][0]
    port["containerPorts"] = port.pop("containerPort")
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(broken))
    assert _validate(path).returncode != 0


def test_crd_objects_follow_their_schemas(overlay):
    import jsonschema

    _, docs, _ = overlay
    for kind, schema in (("ServiceMonitor", "servicemonitor.json"), ("PrometheusRule", "prometheusrule.json")):
        obj = next(d for d in docs if d["kind"] == kind)
        jsonschema.validate(obj, json.loads((K8S / "crd-schemas" / schema).read_text()))
        bad = json.loads(json.dumps(obj))
        bad["spec"]["unknownField"] = 1
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, json.loads((K8S / "crd-schemas" / schema).read_text()))


def test_deployment_is_locked_down_and_probes_grpc(overlay):
    _, docs, _ = overlay
    dep = next(d for d in docs if d["kind"] == "Deployment")
    pod = dep["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] and c["securityContext"]["readOnlyRootFilesystem"]
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    health_port = next(int(e["value"]) for e in c["env"] if e["name"] == "DWCP_INFERENCE_HEALTH_PORT")
    assert {c[p]["grpc"]["port"] for p in ("startupProbe", "readinessProbe", "livenessProbe")} == {health_port}
    assert c["livenessProbe"]["grpc"]["service"] == "liveness"  # the process answers: neither overload nor a
    # repository without a good version restarts a pod
    grace = next(int(e["value"]) for e in c["env"] if e["name"] == "DWCP_INFERENCE_GRACE_SECONDS")
    assert pod["terminationGracePeriodSeconds"] > grace + c["lifecycle"]["preStop"]["sleep"]["seconds"]
    policy = next(d for d in docs if d["kind"] == "NetworkPolicy")
    admin_rule = next(r for r in policy["spec"]["ingress"] if any(p["port"] == 50052 for p in r["ports"]))
    assert admin_rule["from"], "the admin port must not be open to every pod"


def test_prometheusrule_is_generated_from_the_alert_rules():
    sys.path.insert(0, str(K8S))
    try:
        import gen_prometheusrule
    finally:
        sys.path.pop(0)
    assert (K8S / "base" / "prometheusrule.yaml").read_text() == gen_prometheusrule.render(), \
        "run python deploy/k8s/gen_prometheusrule.py"


def test_dockerfile_passes_hadolint():
    hadolint = _tool("hadolint", Path(sys.executable).parent)
    proc = subprocess.run([hadolint, str(ROOT / "deploy" / "docker" / "Dockerfile")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


def test_systemd_unit_verifies(tmp_path):
    analyze = _tool("systemd-analyze")
    unit = (ROOT / "deploy" / "systemd" / "dwcp-inference.service").read_text()
    exe = shutil.which("dwcp-inference") or str(Path(sys.executable).parent / "dwcp-inference")
    (tmp_path / "dwcp-inference.service").write_text(unit.replace("/opt/dwcp-inference/bin/dwcp-inference", exe))
    proc = subprocess.run([analyze, "verify", str(tmp_path / "dwcp-inference.service")], capture_output=True,
                          text=True)
    assert proc.returncode == 0 and "dwcp-inference.service" not in proc.stderr, proc.stderr


def test_compose_file_is_valid():
    compose = _tool("docker-compose")
    proc = subprocess.run([compose, "config", "-q"], cwd=ROOT / "deploy" / "compose", capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
