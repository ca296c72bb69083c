"""The command line, run as a user runs it."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import trustme

from dwcp_inference.services.settings import bundled_models
from .conftest import free_port, start_server

CLI = [sys.executable, "-m", "dwcp_inference.commands.cli"]
COMMANDS = ["serve", "train", "evaluate", "tune", "fuzz", "soak", "models", "verify", "import", "health"]


def run(*args: str, env: dict[str, str] | None = None, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})}, **kw)


@pytest.mark.parametrize("args", [[], *([c] for c in COMMANDS), ["bench"]])
def test_help_everywhere_is_whole_sentences(args):
    out = subprocess.run([*CLI, *args, "--help"], capture_output=True, text=True, check=True).stdout
    assert "usage: dwcp-inference" in out
    description = out.split("\n\n")[1]  # the paragraph after the usage
    assert not description.startswith(("options:", "positional arguments:")), f"no description: {out}"
    assert description.rstrip().endswith((".", ")")) and "`\n" not in description and not description.endswith("`"), \
        description


def _subparsers(parser: argparse.ArgumentParser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield name, sub
                yield from ((f"{name} {n}", s) for n, s in _subparsers(sub))


def test_every_command_has_a_description_and_every_flag_help_with_its_default():
    from dwcp_inference.commands.cli import build_parser

    missing = []
    for name, sub in _subparsers(build_parser()):
        if name == "bench":  # bench parses its own flags: checked by --help above
            continue
        if not sub.description and " " not in name:
            missing.append(f"{name}: no description")
        for action in sub._actions:
            if not action.option_strings or isinstance(action, argparse._HelpAction):
                continue
            flag = f"{name} {action.option_strings[-1]}"
            if not action.help:
                missing.append(f"{flag}: no help")
            elif action.nargs != 0 and not action.required and "default" not in action.help:
                missing.append(f"{flag}: no default in {action.help!r}")
    assert not missing, "\n".join(missing)


def test_version_names_the_package_and_the_api():
    out = run("--version")
    assert out.returncode == 0 and out.stdout.strip() == "dwcp-inference 0.1.0 (API dwcp.inference.v1)", out


def test_serve_help_shows_what_the_environment_set():
    out = run("serve", "--help", env={"DWCP_INFERENCE_PORT": "6000", "DWCP_INFERENCE_ADMIN_TOKEN": "hunter2"}).stdout
    port_help = " ".join(out.split("\n  --port PORT")[1].split("\n  --", 1)[0].split())
    assert "'6000' from DWCP_INFERENCE_PORT" in port_help, port_help
    assert "hunter2" not in out  # a secret is never printed


def test_env_variables_take_effect_in_serve():
    port, metrics, admin = free_port(), free_port(), free_port()
    env = {**os.environ, "DWCP_INFERENCE_HOST": "127.0.0.1", "DWCP_INFERENCE_PORT": str(port),
           "DWCP_INFERENCE_METRICS_HOST": "127.0.0.1", "DWCP_INFERENCE_METRICS_PORT": str(metrics),
           "DWCP_INFERENCE_ADMIN_PORT": str(admin)}
    proc = subprocess.Popen([*CLI, "serve"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while (health := run("health", "--target", f"127.0.0.1:{port}")).returncode != 0 \
                and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.3)
        assert health.returncode == 0, health.stdout
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=10) as r:
            assert b"dwcp_inference_" in r.read()
        listing = run("models", "--admin", f"127.0.0.1:{admin}", "list", "--json")
        assert listing.returncode == 0, listing.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out


def _bad_policy(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    shutil.copytree(bundled_models(), repo, ignore=shutil.ignore_patterns("__init__.py", "__pycache__"))
    (repo / "bandwidth_predictor" / "policy.json").write_text('{"keep_latest": "2"}')
    return repo


LEAN = ("import sys; sys.modules.update(torch=None, sklearn=None); "  # the server's install: no train extra
        "from dwcp_inference.commands.cli import main; sys.exit(main())")


@pytest.mark.parametrize("case", ["missing repository", "client ca without a certificate", "port not a number",
                                  "bad policy.json", "unreadable tls file", "train without the train extra",
                                  "client key without a certificate", "unreadable client ca"])
def test_configuration_errors_are_one_line_naming_the_setting(case, tmp_path):
    env = {"DWCP_INFERENCE_LOG_LEVEL": "ERROR"}
    command = [*CLI, "serve", "--port", "0", "--metrics-port", "-1", "--admin-port", "-1", "--host", "127.0.0.1"]
    if case == "missing repository":
        command, named = [*command, "--repository", str(tmp_path / "nope")], "--repository"
    elif case == "client ca without a certificate":
        command, named = [*command, "--tls-client-ca", "/etc/hostname"], "--tls-client-ca"
    elif case == "port not a number":
        env["DWCP_INFERENCE_PORT"] = "abc"
        command, named = [*CLI, "serve"], "DWCP_INFERENCE_PORT='abc': expected an integer"
    elif case == "bad policy.json":
        command, named = [*command, "--repository", str(_bad_policy(tmp_path))], "policy.json: keep_latest"
    elif case == "unreadable tls file":
        command, named = [*command, "--tls-cert", str(tmp_path / "none.pem"), "--tls-key", "/etc/hostname"], \
            "--tls-cert"
    elif case == "train without the train extra":
        command = [sys.executable, "-c", LEAN, "train", "bandwidth", "--out", str(tmp_path / "repo")]
        named = "train needs the train extra: pip install 'dwcp-inference[train]'"
    elif case == "client key without a certificate":
        command, named = [*CLI, "health", "--key", "/etc/hostname"], "--cert and --key"
    else:
        command, named = [*CLI, "models", "--ca", str(tmp_path / "ca.pem"), "list"], "--ca"
    proc = subprocess.run(command, capture_output=True, text=True, timeout=120, env={**os.environ, **env})
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert named in proc.stderr, proc.stderr


@pytest.mark.parametrize("flag, value, env", [("--poll-seconds", "nan", ""), ("--grace-seconds", "inf", ""),
                                               ("--max-concurrent-rpcs", "0", ""), ("--batch-max-wait-us", "-5", ""),
                                               ("--threads", "-1", "DWCP_INFERENCE_THREADS")])
def test_numbers_that_are_not_finite_or_below_their_floor_are_refused(flag, value, env):
    """NaN would turn the repository watch off without a word (nan > 0 is false), infinity would never drain."""
    command = [*CLI, "serve", "--port", "0", "--metrics-port", "-1", "--admin-port", "-1"]
    extra = {env: value} if env else {}
    if not env:
        command += [flag, value]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=120, env={**os.environ, **extra})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stdout + proc.stderr
    assert f"{flag} " in proc.stderr and "expected a finite number >=" in proc.stderr, proc.stderr


def test_a_bad_serve_variable_leaves_the_other_commands_alone():
    env = {"DWCP_INFERENCE_PORT": "abc"}
    assert run("train", "--help", env=env).returncode == 0
    health = run("health", "--target", "127.0.0.1:1", "--timeout", "1", env=env)
    assert health.returncode == 1 and "UNAVAILABLE" in health.stdout, health.stdout + health.stderr


def test_unknown_model_names_get_the_list():
    for args in (["train", "nope", "--out", "x"], ["models", "list", "nope"], ["evaluate", "nope", "--repository",
                                                                                "x", "--data", "y"]):
        proc = run(*args)
        assert proc.returncode == 2 and "compression_selector (compression)" in proc.stderr, proc.stderr


def test_bundled_models_verify():
    assert {p.name for p in bundled_models().iterdir() if p.is_dir()} == {
        "bandwidth_predictor", "compression_selector", "reliability_detector", "consensus_latency"}
    size = sum(f.stat().st_size for f in bundled_models().rglob("*") if f.is_file())
    assert size < 10 << 20
    proc = subprocess.run([*CLI, "verify"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert '"refused": []' in proc.stdout


def test_serve_with_no_arguments_serves_the_bundled_models_and_drains_on_sigterm():
    port, metrics = free_port(), free_port()
    proc = subprocess.Popen([*CLI, "serve", "--host", "127.0.0.1", "--port", str(port), "--metrics-port",
                             str(metrics)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            health = subprocess.run([*CLI, "health", "--target", f"127.0.0.1:{port}"], capture_output=True,
                                    text=True)
            if health.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert health.returncode == 0, health.stdout
        model = subprocess.run([*CLI, "health", "--target", f"127.0.0.1:{port}", "--service", "consensus_latency"],
                               capture_output=True, text=True)
        assert model.returncode == 0 and "SERVING" in model.stdout
        unknown = subprocess.run([*CLI, "health", "--target", f"127.0.0.1:{port}", "--service", "nope"],
                                 capture_output=True, text=True)
        assert unknown.returncode == 1 and "NOT_FOUND" in unknown.stdout
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert "dwcp-inference stopped" in out


@pytest.mark.parametrize("name", ["reliability", "reliability_detector"])
def test_train_refuses_broken_csv_with_the_row(tmp_path: Path, name: str):
    bad = tmp_path / "nodes.csv"
    bad.write_text("error_rate\n0.1\nnot-a-number\n")
    proc = subprocess.run([*CLI, "train", name, "--data", str(bad), "--out", str(tmp_path / "repo")],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "missing columns" in proc.stderr
    assert not (tmp_path / "repo").exists()


def test_models_and_health_take_full_and_short_names(tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(bundled_models(), repo, ignore=shutil.ignore_patterns("__init__.py", "__pycache__"))
    running = start_server(repo, metrics_port=-1)
    target, admin = f"127.0.0.1:{running.port}", f"127.0.0.1:{running.admin_port}"
    try:
        listing = run("models", "--admin", admin, "list", "compression", "--json")
        promoted = run("models", "--admin", admin, "promote", "bandwidth", "1")
        run("models", "--admin", admin, "promote", "bandwidth", "1", "--label", "canary")
        unlabelled = run("models", "--admin", admin, "unlabel", "bandwidth", "canary")
        refused = run("models", "--admin", admin, "unlabel", "bandwidth", "stable")
        short = run("health", "--target", target, "--service", "bandwidth")
        unknown = run("health", "--target", target, "--service", "nope")
    finally:
        running.stop(0)
    assert listing.returncode == 0, listing.stderr
    assert [m["name"] for m in json.loads(listing.stdout)] == ["compression_selector"]
    assert promoted.returncode == 0 and "labels=stable->1" in promoted.stdout, promoted.stderr
    assert unlabelled.returncode == 0 and "labels=stable->1\n" in unlabelled.stdout, unlabelled.stderr
    assert refused.returncode == 1 and "default route" in refused.stderr, refused.stderr
    assert short.returncode == 0 and "bandwidth_predictor: SERVING" in short.stdout, short.stdout
    assert unknown.returncode == 1 and "NOT_FOUND" in unknown.stdout and "bandwidth_predictor" in unknown.stdout


def _certificates(tmp_path: Path) -> dict[str, Path]:
    """A server certificate for 127.0.0.1 and localhost, and a client certificate from another CA."""
    from .test_hardening import _write_server_cert

    ca, client_ca = trustme.CA(), trustme.CA()
    chain, key = _write_server_cert(ca, tmp_path)
    client = client_ca.issue_cert("dwcp-operator")
    files = {"chain": chain, "key": key, "ca": tmp_path / "ca.pem", "client_ca": tmp_path / "client-ca.pem",
             "client_cert": tmp_path / "client.pem", "client_key": tmp_path / "client.key"}
    files["ca"].write_bytes(ca.cert_pem.bytes())
    files["client_ca"].write_bytes(client_ca.cert_pem.bytes())
    files["client_cert"].write_bytes(b"".join(b.bytes() for b in client.cert_chain_pems))
    files["client_key"].write_bytes(client.private_key_pem.bytes())
    return files


def test_health_and_models_speak_tls(tmp_path):
    certs = _certificates(tmp_path)
    running = start_server(bundled_models(), metrics_port=-1, tls_cert=certs["chain"], tls_key=certs["key"])
    target, admin = f"127.0.0.1:{running.port}", f"127.0.0.1:{running.admin_port}"
    try:
        health = run("health", "--target", target, "--ca", str(certs["ca"]), "--server-name", "localhost")
        from_env = run("models", "--admin", admin, "list", env={"DWCP_INFERENCE_CLIENT_CA": str(certs["ca"])})
        plaintext = run("health", "--target", target)
    finally:
        running.stop(0)
    assert health.returncode == 0 and "SERVING" in health.stdout, health.stdout
    assert from_env.returncode == 0 and "bandwidth_predictor" in from_env.stdout, from_env.stderr
    assert plaintext.returncode == 1 and "pass --ca" in plaintext.stdout, plaintext.stdout


def test_health_and_models_speak_mutual_tls(tmp_path):
    certs = _certificates(tmp_path)
    running = start_server(bundled_models(), metrics_port=-1, tls_cert=certs["chain"], tls_key=certs["key"],
                           tls_client_ca=certs["client_ca"])
    target, admin = f"127.0.0.1:{running.port}", f"127.0.0.1:{running.admin_port}"
    client = ["--ca", str(certs["ca"]), "--cert", str(certs["client_cert"]), "--key", str(certs["client_key"])]
    try:
        health = run("health", "--target", target, *client)
        listing = run("models", "--admin", admin, *client, "list", "--json")
        refused = run("health", "--target", target, "--ca", str(certs["ca"]))
        refused_admin = run("models", "--admin", admin, "--ca", str(certs["ca"]), "list")
    finally:
        running.stop(0)
    assert health.returncode == 0 and "SERVING" in health.stdout, health.stdout
    assert listing.returncode == 0 and len(json.loads(listing.stdout)) == 4, listing.stderr
    for proc, out in ((refused, refused.stdout), (refused_admin, refused_admin.stderr)):
        assert proc.returncode == 1 and "UNAVAILABLE" in out and "client certificate" in out and "--cert" in out, out
