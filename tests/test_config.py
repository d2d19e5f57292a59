from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from node_exporter_ml.cli import main
from node_exporter_ml.config import (
    ConfigError,
    parse_args,
    parse_config_file,
    parse_duration,
    parse_listen_address,
)
from tests.helpers import flat

COLLECTORS = {"alpha": True, "beta": False}


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("5s", 5.0), ("250ms", 0.25), ("1m30s", 90.0), ("15m", 900.0), ("2", 2.0), ("1h", 3600.0)],
)
def test_parse_duration(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "5x", "-1s", "0s", "s", "1.5.s"])
def test_parse_duration_rejects(text):
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "parsed"),
    [(":9847", ("", 9847)), ("127.0.0.1:80", ("127.0.0.1", 80)), ("[::1]:9847", ("::1", 9847))],
)
def test_parse_listen_address(text, parsed):
    assert parse_listen_address(text) == parsed


def test_collector_flags_defaults_and_overrides():
    assert parse_args([], COLLECTORS).collectors == {"alpha"}
    assert parse_args(["--collector.beta"], COLLECTORS).collectors == {"alpha", "beta"}
    assert parse_args(["--no-collector.alpha"], COLLECTORS).collectors == frozenset()
    cfg = parse_args(["--collector.disable-defaults", "--collector.beta"], COLLECTORS)
    assert cfg.collectors == {"beta"}


def test_flags_parse_into_config(tmp_path, monkeypatch):
    monkeypatch.setenv("NODE_NAME", "gpu-node-7")
    cfg = flat(
        parse_args(
            ["--sampler.interval=2s", "--serving.window=30s", f"--path.procfs={tmp_path}"],
            COLLECTORS,
        )
    )
    assert cfg.interval == 2.0
    assert cfg.serving_window == 30.0
    assert cfg.procfs == str(tmp_path)
    assert cfg.kube_node_name == "gpu-node-7"
    assert cfg.listen_address == ":9847"


GOOD = """
serving:
  targets:
    - url: http://127.0.0.1:8000/metrics
      name: vllm
      pid: 415
    - url: http://10.0.0.5:8002/metrics
      pod: inference/triton-0
  timeout: 1500ms
processes:
  match:
    - comm: "^python"
      cmdline: "vllm serve"
kube:
  pod_labels: [app]
"""


def test_config_file_parses():
    fc = flat(parse_config_file(GOOD, "c.yaml"))
    assert [t.label for t in fc.serving_targets] == ["vllm", "10.0.0.5:8002"]
    assert fc.serving_targets[0].pid == 415
    assert fc.serving_targets[1].pod == "inference/triton-0"
    assert fc.serving_timeout == 1.5
    assert fc.process_match[0].comm is not None
    assert fc.process_match[0].comm.pattern == "^python"
    assert fc.kube_pod_labels == ("app",)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("bogus: 1", "c.yaml: bogus: unknown key"),
        (
            "serving: {targets: [{url: ftp://x}]}",
            "c.yaml: serving.targets[0].url: expected an http",
        ),
        ("serving: {targets: [{name: x}]}", "c.yaml: serving.targets[0].url: missing"),
        ("serving: {targets: [{url: 'http://a:1/', pid: -3}]}", "serving.targets[0].pid: expected"),
        ("serving: {targets: [{url: 'http://a:1/', pid: 3, pod: a/b}]}", "at most one of"),
        ("serving: {targets: [{url: 'http://a:1/', pod: nopod}]}", "namespace/name"),
        ("serving: {timeout: soon}", "serving.timeout: expected a duration"),
        ("serving: {targets: {url: x}}", "serving.targets: expected a list"),
        ("processes: {match: [{comm: '('}]}", "processes.match[0].comm: expected a regular"),
        ("processes: {match: [{}]}", "processes.match[0]: expected comm and/or cmdline"),
        ("serving: {targets: [{url: 'http://a:1/'}, {url: 'http://a:1/x'}]}", "duplicate target"),
        ("serving: [", "c.yaml: line"),
    ],
    ids=[
        "unknown top-level key",
        "non-http url",
        "target without url",
        "negative pid",
        "two owners",
        "pod without namespace",
        "bad duration",
        "targets not a list",
        "bad regex",
        "empty match rule",
        "duplicate target label",
        "broken yaml",
    ],
)
def test_config_file_errors_name_file_and_key(text, message):
    with pytest.raises(ConfigError) as err:
        parse_config_file(text, "c.yaml")
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_bad_config_exits_2_with_one_line(tmp_path, capsys):
    path = tmp_path / "agent.yaml"
    path.write_text("serving:\n  concurrency: many\n")
    assert main([f"--config.file={path}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert f"{path}: serving.concurrency: expected an integer >= 1, got 'many'" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--config.file=/nonexistent/agent.yaml"], "/nonexistent/agent.yaml: cannot read"),
        (["--path.procfs=/nonexistent"], "--path.procfs: /nonexistent: expected a readable dir"),
        (["--nvml.replay=/nonexistent.json"], "--nvml.replay: /nonexistent.json: no such file"),
        (["--web.config.file=/nonexistent.yml"], "--web.config.file: /nonexistent.yml"),
        (["--nvml.replay=/"], "--nvml.replay: /: expected a file, got a directory"),
        (["--kube.token-file=/nonexistent"], "--kube.token-file: /nonexistent: no such file"),
        (["--kube.ca-file=/nonexistent"], "--kube.ca-file: /nonexistent: no such file"),
        (["--kube.api-url=notaurl"], "--kube.api-url: expected an http(s) URL, got 'notaurl'"),
        (["--web.telemetry-path=metrics"], "--web.telemetry-path: expected a path starting"),
        (["--web.telemetry-path=/healthz"], "--web.telemetry-path: expected a path starting"),
        (["--web.telemetry-path=/api/v1/x"], "--web.telemetry-path: expected a path starting"),
    ],
)
def test_unreadable_paths_exit_2(args, message, capsys):
    assert main(args) == 2
    assert message in capsys.readouterr().err


def test_bad_flag_value_exits_2_via_subprocess():
    proc = subprocess.run(
        [sys.executable, "-m", "node_exporter_ml", "--sampler.interval=fast"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 2
    assert "--sampler.interval" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_web_config_errors_exit_2(tmp_path: Path, capsys):
    web = tmp_path / "web.yml"
    web.write_text("basic_auth_users:\n  alice: plaintext\n")
    assert main([f"--web.config.file={web}"]) == 2
    assert "basic_auth_users.alice: expected a bcrypt hash" in capsys.readouterr().err
    web.write_text("tls_server_config:\n  cert_file: missing.crt\n  key_file: missing.key\n")
    assert main([f"--web.config.file={web}"]) == 2
    assert "tls_server_config.cert_file" in capsys.readouterr().err


def test_unusable_state_dir_is_a_clear_startup_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    proc = subprocess.run(
        [sys.executable, "-m", "node_exporter_ml", f"--state.dir={blocker}/state",
         "--web.listen-address=127.0.0.1:0"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "--state.dir" in proc.stderr
    assert "Traceback" not in proc.stderr
