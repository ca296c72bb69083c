"""The alert rules are proven by promtool's unit tests (series in, alerts out), and the Kubernetes copy agrees."""

from __future__ import annotations

import subprocess
from pathlib import Path

from .test_prometheus import DEPLOY, _tool

RULE_TESTS = sorted((DEPLOY / "tests").glob("*.yml"))


def _promtool(*args: str) -> None:
    proc = subprocess.run([_tool("promtool"), *args], capture_output=True, text=True)
    assert proc.returncode == 0, f"promtool {' '.join(args)}:\n{proc.stdout}{proc.stderr}"


def test_alert_rules_pass_their_promtool_unit_tests():
    assert RULE_TESTS, f"no promtool rule tests in {DEPLOY / 'tests'}"
    _promtool("test", "rules", *map(str, RULE_TESTS))


def test_every_alert_has_test_cases():
    import yaml

    alerts = {r["alert"] for g in yaml.safe_load((DEPLOY / "alerts.yml").read_text())["groups"]
              for r in g["rules"] if "alert" in r}
    tested: dict[str, set[bool]] = {}
    for path in RULE_TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                tested.setdefault(check["alertname"], set()).add(bool(check.get("exp_alerts")))
    assert {a for a in alerts if tested.get(a) != {True, False}} == set(), \
        "every alert needs a case where it fires and one where it stays silent"


def test_kubernetes_prometheusrule_holds_the_same_rules():
    import yaml

    rules = yaml.safe_load((DEPLOY / "alerts.yml").read_text())["groups"]
    k8s = yaml.safe_load((Path(DEPLOY).parents[0] / "k8s" / "base" / "prometheusrule.yaml").read_text())
    assert k8s["spec"]["groups"] == rules, "run python deploy/k8s/gen_prometheusrule.py"
