"""Web config: what a load refuses, what a reload refuses, and TLS changes applied on reload."""

from __future__ import annotations

import signal
import ssl
import time
import urllib.error
from pathlib import Path

import bcrypt
import pytest
import trustme

from node_exporter_ml.config import ConfigError
from node_exporter_ml.webconfig import check_reload, parse_web_config
from tools.agentproc import AgentProcess

HASH = bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=4)).decode()


def _tls(d: Path, name: str) -> trustme.CA:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert.private_key_pem.write_to_path(str(d / f"{name}.key"))
    cert.cert_chain_pems[0].write_to_path(str(d / f"{name}.crt"))
    ca.cert_pem.write_to_path(str(d / f"{name}-ca.crt"))
    return ca


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> tuple[Path, trustme.CA, trustme.CA]:
    d = tmp_path_factory.mktemp("certs")
    return d, _tls(d, "a"), _tls(d, "b")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(
            "tls_server_config: {cert_file: a.crt, key_file: a.key, min_version: TLS13,"
            " max_version: TLS12}",
            "min_version TLS13 is above max_version TLS12",
            id="min above max",
        ),
        pytest.param(
            "tls_server_config: {cert_file: a.crt, key_file: a.key,"
            " cipher_suites: [TLS_AES_128_GCM_SHA256]}",
            "cipher_suites: not supported",
            id="cipher_suites",
        ),
        pytest.param(
            "tls_server_config: {cert_file: a.crt, key_file: a.key, curve_preferences: [X25519]}",
            "curve_preferences: not supported",
            id="curve_preferences",
        ),
        pytest.param(
            "tls_server_config: {cert_file: a.crt, key_file: a.key,"
            " prefer_server_cipher_suites: maybe}",
            "prefer_server_cipher_suites: expected true or false",
            id="prefer_server_cipher_suites",
        ),
        pytest.param(
            'http_server_config:\n  headers:\n    X-A: "ok\\r\\nSet-Cookie: x=1"\n',
            "without CR, LF or NUL",
            id="CRLF in a header value",
        ),
        pytest.param(
            'http_server_config:\n  headers:\n    "X A": v\n', "a header name", id="bad name"
        ),
        pytest.param("basic_auth_users: {u: " + "9" * 5000 + "}", "valid YAML", id="huge int"),
    ],
)
def test_web_config_refused_at_load(certs, text, message):
    d = certs[0]
    with pytest.raises(ConfigError, match=message):
        parse_web_config(text, "web.yml", d)


def test_prefer_server_cipher_suites_is_applied(certs):
    d = certs[0]
    for prefer in (True, False):
        cfg = parse_web_config(
            f"tls_server_config: {{cert_file: a.crt, key_file: a.key,"
            f" prefer_server_cipher_suites: {str(prefer).lower()}}}",
            "web.yml",
            d,
        )
        ctx = cfg.ssl_context()
        assert ctx is not None
        assert bool(ctx.options & ssl.OP_CIPHER_SERVER_PREFERENCE) is prefer


def test_reload_refuses_silent_downgrades(certs):
    d = certs[0]
    with_auth = parse_web_config(f"basic_auth_users: {{p: '{HASH}'}}", "w", d)
    lost = parse_web_config("http_server_config: {headers: {X-A: b}}", "w", d)
    with pytest.raises(ConfigError, match="would serve without authentication"):
        check_reload(with_auth, lost)
    check_reload(with_auth, parse_web_config("basic_auth_users: {}", "w", d))  # on purpose
    tls = parse_web_config("tls_server_config: {cert_file: a.crt, key_file: a.key}", "w", d)
    with pytest.raises(ConfigError, match="turning TLS off needs a restart"):
        check_reload(tls, parse_web_config("", "w", d))
    with pytest.raises(ConfigError, match="turning TLS on needs a restart"):
        check_reload(parse_web_config("", "w", d), tls)


def _client(ca: trustme.CA, cert: trustme.LeafCert | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    if cert is not None:
        cert.configure_cert(ctx)
    return ctx


def _status(agent: AgentProcess, ctx: ssl.SSLContext) -> int | str:
    agent.ssl_context = ctx
    try:
        return agent.get("/healthz").status
    except (urllib.error.URLError, ConnectionError, ssl.SSLError) as err:
        return type(err).__name__


@pytest.mark.timeout(90)
def test_sighup_applies_tls_changes_and_refuses_dropping_auth(certs, tmp_path):
    d, ca_a, ca_b = certs
    web = tmp_path / "web.yml"
    web.write_text(
        f"tls_server_config: {{cert_file: {d}/a.crt, key_file: {d}/a.key}}\n"
        f"basic_auth_users: {{p: '{HASH}'}}\n"
    )
    agent = AgentProcess(
        ["--collector.disable-defaults", f"--web.config.file={web}"],
        tmp_path,
        scheme="https",
        ssl_context=_client(ca_a),
    ).start()
    try:
        agent.wait_ready()

        def reload(expect: str) -> None:
            mark = agent.output().count(expect)
            agent.signal(signal.SIGHUP)
            deadline = time.monotonic() + 10
            while agent.output().count(expect) == mark and time.monotonic() < deadline:
                time.sleep(0.1)
            assert agent.output().count(expect) > mark, agent.output()[-2000:]

        # A new certificate and client verification, applied to new connections.
        client_cert = ca_b.issue_cert("prometheus@example.com")
        web.write_text(
            f"tls_server_config: {{cert_file: {d}/b.crt, key_file: {d}/b.key,"
            f" client_auth_type: RequireAndVerifyClientCert, client_ca_file: {d}/b-ca.crt}}\n"
            f"basic_auth_users: {{p: '{HASH}'}}\n"
        )
        reload("configuration reloaded")
        assert _status(agent, _client(ca_a, client_cert)) != 200  # old CA no longer matches
        assert _status(agent, _client(ca_b)) != 200  # no client certificate
        assert _status(agent, _client(ca_b, client_cert)) == 200
        # A file that lost its users (or TLS) is refused; the running config stays.
        web.write_text(f"tls_server_config: {{cert_file: {d}/b.crt, key_file: {d}/b.key}}\n")
        reload("reload failed")
        assert "would serve without authentication" in agent.output()
        agent.ssl_context = _client(ca_b, client_cert)
        assert agent.get("/metrics").status == 401
    finally:
        agent.stop()


@pytest.mark.timeout(90)
def test_sighup_with_a_bad_config_file_keeps_the_running_tls_too(certs, tmp_path):
    d, ca_a, ca_b = certs
    web = tmp_path / "web.yml"
    web.write_text(f"tls_server_config: {{cert_file: {d}/a.crt, key_file: {d}/a.key}}\n")
    conf = tmp_path / "config.yml"
    conf.write_text("")
    agent = AgentProcess(
        ["--collector.disable-defaults", f"--web.config.file={web}", f"--config.file={conf}"],
        tmp_path,
        scheme="https",
        ssl_context=_client(ca_a),
    ).start()
    try:
        agent.wait_ready()
        # A good web config with a new certificate, beside a config file that is now bad.
        web.write_text(f"tls_server_config: {{cert_file: {d}/b.crt, key_file: {d}/b.key}}\n")
        conf.write_text("no_such_key: 1\n")
        agent.signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while "reload failed" not in agent.output() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "reload failed" in agent.output(), agent.output()[-2000:]
        assert _status(agent, _client(ca_a)) == 200  # the running certificate still serves
        assert _status(agent, _client(ca_b)) != 200
    finally:
        agent.stop()
