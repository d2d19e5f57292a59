"""The real agent as a subprocess: readiness, negotiation, gzip, TLS, basic auth, signals."""

from __future__ import annotations

import base64
import gzip
import shutil
import signal
import ssl
import subprocess
import threading
import time
import urllib.error

import bcrypt
import pytest
import trustme

from tools.agentproc import AgentProcess

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def agent_factory(tmp_path):
    started: list[AgentProcess] = []

    def make(*args: str, **kw) -> AgentProcess:
        proc = AgentProcess(list(args), tmp_path, **kw).start()
        started.append(proc)
        return proc

    yield make
    for proc in started:
        proc.stop()


BASE = ("--sampler.interval=0.5s",)


def test_plain_agent_serves_both_formats_and_gzip(agent_factory):
    agent = agent_factory(*BASE)
    agent.wait_ready()
    resp = agent.get("/metrics")
    assert resp.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert "nodeml_snapshot_timestamp_seconds" in resp.text
    assert "process_resident_memory_bytes" in resp.text
    om = agent.get("/metrics", {"Accept": "application/openmetrics-text; version=1.0.0"})
    assert om.headers["Content-Type"].startswith("application/openmetrics-text")
    assert om.text.rstrip().endswith("# EOF")
    gz = agent.get("/metrics", {"Accept-Encoding": "gzip"})
    assert gz.headers["Content-Encoding"] == "gzip"
    assert b"nodeml_build_info" in gzip.decompress(gz.body)
    assert agent.get("/healthz").status == 200
    assert "node-exporter-ml" in agent.get("/").text


def test_sigterm_stops_within_5s_after_inflight_requests(agent_factory):
    agent = agent_factory(*BASE)
    agent.wait_ready()
    results = []

    def scrape_many():
        for _ in range(20):
            try:
                results.append(agent.get("/metrics").status)
            except (urllib.error.URLError, ConnectionError):
                results.append(-1)

    t = threading.Thread(target=scrape_many)
    t.start()
    time.sleep(0.05)
    started = time.monotonic()
    agent.signal(signal.SIGTERM)
    assert agent.proc is not None
    assert agent.proc.wait(10) == 0
    assert time.monotonic() - started < 5
    t.join()
    assert 200 in results
    assert "Traceback" not in agent.output()


def test_sighup_reloads_config_file(agent_factory, tmp_path):
    cfg = tmp_path / "agent.yaml"
    cfg.write_text("kube:\n  pod_labels: [app]\n")
    agent = agent_factory(*BASE, f"--config.file={cfg}")
    agent.wait_ready()
    cfg.write_text("kube:\n  pod_labels: [app, team]\n")
    agent.signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "configuration reloaded" not in agent.output() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "configuration reloaded" in agent.output()
    cfg.write_text("kube: [broken\n")
    agent.signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "reload failed" not in agent.output() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "reload failed, keeping the running configuration" in agent.output()
    assert agent.get("/readyz").status == 200


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    server.private_key_pem.write_to_path(str(d / "server.key"))
    server.cert_chain_pems[0].write_to_path(str(d / "server.crt"))
    ca.cert_pem.write_to_path(str(d / "ca.crt"))
    client = ca.issue_cert("prometheus@example.com")
    client.private_key_and_cert_chain_pem.write_to_path(str(d / "client.pem"))
    return d, ca


def _basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def test_tls_and_basic_auth(agent_factory, tls_files, tmp_path):
    d, ca = tls_files
    hashed = bcrypt.hashpw(b"scrape-me", bcrypt.gensalt(rounds=6)).decode()
    web = tmp_path / "web.yml"
    web.write_text(
        f"tls_server_config:\n  cert_file: {d}/server.crt\n  key_file: {d}/server.key\n"
        f"  min_version: TLS12\nbasic_auth_users:\n  prometheus: '{hashed}'\n"
    )
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    agent = agent_factory(*BASE, f"--web.config.file={web}", scheme="https", ssl_context=ctx)
    agent.wait_ready()
    assert agent.get("/metrics").status == 401
    assert agent.get("/metrics", _basic("prometheus", "wrong")).status == 401
    assert "nodeml_build_info" in agent.metrics(_basic("prometheus", "scrape-me"))
    # Plain HTTP against the TLS port fails.
    plain = AgentProcess([], tmp_path, port=agent.port)
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        plain.get("/healthz")


def test_tls_client_certificates_required(agent_factory, tls_files, tmp_path):
    d, ca = tls_files
    web = tmp_path / "web.yml"
    web.write_text(
        f"tls_server_config:\n  cert_file: {d}/server.crt\n  key_file: {d}/server.key\n"
        f"  client_ca_file: {d}/ca.crt\n  client_auth_type: RequireAndVerifyClientCert\n"
    )
    with_cert = ssl.create_default_context()
    ca.configure_trust(with_cert)
    with_cert.load_cert_chain(str(d / "client.pem"))
    agent = agent_factory(*BASE, f"--web.config.file={web}", scheme="https", ssl_context=with_cert)
    agent.wait_ready()
    assert "nodeml_build_info" in agent.metrics()
    no_cert = ssl.create_default_context()
    ca.configure_trust(no_cert)
    anonymous = AgentProcess([], tmp_path, port=agent.port, scheme="https", ssl_context=no_cert)
    with pytest.raises((urllib.error.URLError, ConnectionError, ssl.SSLError)):
        anonymous.get("/healthz")


def test_port_in_use_is_a_clear_error(agent_factory, tmp_path):
    first = agent_factory(*BASE)
    first.wait_ready()
    # Its own state directory: a second agent on the first one's is refused before the port.
    second = agent_factory(*BASE, f"--state.dir={tmp_path}/state2", port=first.port)
    assert second.proc is not None
    assert second.proc.wait(20) == 1
    assert "--web.listen-address" in second.output()
    assert "Traceback" not in second.output()


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool missing: run make test")
def test_live_exposition_passes_promtool(agent_factory):
    agent = agent_factory(*BASE)
    agent.wait_ready()
    proc = subprocess.run(
        ["promtool", "check", "metrics"],
        input=agent.metrics().encode(),
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == b""
    assert proc.stderr.strip() == b""
