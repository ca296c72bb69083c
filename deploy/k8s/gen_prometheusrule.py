"""Writes base/prometheusrule.yaml from deploy/prometheus/alerts.yml, so the rules live in one place.
Run after changing the alerts: python deploy/k8s/gen_prometheusrule.py (tests/test_deploy.py checks it)."""

from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent


def render() -> str:
    rules = yaml.safe_load((HERE.parent / "prometheus" / "alerts.yml").read_text())
    obj = {"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule",
           "metadata": {"name": "dwcp-inference"}, "spec": {"groups": rules["groups"]}}
    return "# Generated from deploy/prometheus/alerts.yml by deploy/k8s/gen_prometheusrule.py; do not edit.\n" + \
        yaml.safe_dump(obj, sort_keys=False, width=120)


if __name__ == "__main__":
    (HERE / "base" / "prometheusrule.yaml").write_text(render())
