"""--kube.kubeconfig: client certificates and bearer tokens; plugins and hostile files refused."""

from __future__ import annotations

import asyncio
import base64
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trustme
import yaml

from node_exporter_ml.collectors.base import CollectContext
from node_exporter_ml.collectors.kube import KubeCollector
from node_exporter_ml.config import ConfigError
from node_exporter_ml.kubeconfig import MAX_BYTES, PemSource, load_kubeconfig, parse_kubeconfig
from tests.helpers import make_config
from tools.fake_kube import TOKEN, FakeApi, pod_json

UID = "11111111-2222-4333-8444-555555555555"
CID = "3c1f0a9e" * 8
NODE_CN = "system:node:node-a"


def kubeconfig(server: str, user: dict, cluster: dict | None = None, **top) -> dict:
    """A kubeconfig as kubeadm writes /etc/kubernetes/kubelet.conf, with `user` swapped in."""
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "default-cluster", "cluster": {"server": server, **(cluster or {})}}],
        "contexts": [
            {"name": "default-context",
             "context": {"cluster": "default-cluster", "user": "default-auth",
                         "namespace": "default"}},
        ],
        "current-context": "default-context",
        "preferences": {},
        "users": [{"name": "default-auth", "user": user}],
    }  # fmt: skip
    doc.update(top)
    return doc


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def pki(tmp_path: Path, ca: trustme.CA) -> Path:
    """A kubelet-style pki directory: the cluster CA and a client certificate+key file."""
    pki = tmp_path / "pki"
    pki.mkdir()
    ca.cert_pem.write_to_path(str(pki / "ca.crt"))
    client = ca.issue_cert("node-a.example", common_name=NODE_CN)
    client.private_key_and_cert_chain_pem.write_to_path(str(pki / "kubelet-client-current.pem"))
    return pki


def write(tmp_path: Path, doc: object, name: str = "kubelet.conf") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc) if not isinstance(doc, str) else doc)
    return path


def test_kubelet_conf_with_relative_certificate_paths(tmp_path, pki):
    user = {"client-certificate": "pki/kubelet-client-current.pem",
            "client-key": "pki/kubelet-client-current.pem"}  # fmt: skip
    path = write(tmp_path, kubeconfig("https://10.0.0.1:6443/", user,
                                      {"certificate-authority": "pki/ca.crt"}))  # fmt: skip
    cfg = load_kubeconfig(str(path))
    assert cfg.server == "https://10.0.0.1:6443"
    assert cfg.ca == PemSource(path=str(pki / "ca.crt"))
    assert cfg.client_cert == PemSource(path=str(pki / "kubelet-client-current.pem"))
    assert cfg.token is None
    assert isinstance(cfg.ssl_context(), ssl.SSLContext)


def test_inline_data_and_token(tmp_path, ca):
    client = ca.issue_cert("someone")
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    user = {"client-certificate-data": b64(client.cert_chain_pems[0].bytes()),
            "client-key-data": b64(client.private_key_pem.bytes()), "token": "abc.def"}  # fmt: skip
    cluster = {"certificate-authority-data": b64(ca.cert_pem.bytes())}
    path = write(tmp_path, kubeconfig("https://api.example:6443", user, cluster))
    cfg = load_kubeconfig(str(path))
    assert cfg.token == "abc.def"
    assert cfg.client_key == PemSource(data=client.private_key_pem.bytes())
    cfg.ssl_context()
    assert not list(Path("/tmp").glob("nodeml-kubeconfig-*"))  # key material not left behind


@pytest.mark.parametrize(
    ("user", "cluster", "top", "match"),
    [
        ({"exec": {"command": "/bin/sh", "args": ["-c", "id"], "apiVersion": "x"}}, {}, {},
         "exec plugins are refused"),
        ({"auth-provider": {"name": "oidc"}}, {}, {}, "auth-provider plugins are refused"),
        ({"username": "admin", "password": "x"}, {}, {}, "basic auth"),
        ({"token": "t", "as": "system:admin"}, {}, {}, "impersonation"),
        ({"token": "t"}, {"insecure-skip-tls-verify": True}, {}, "insecure-skip-tls-verify"),
        ({"token": "t"}, {"proxy-url": "socks5://x:1"}, {}, "proxy-url"),
        ({"token": "t"}, {"server": "file:///etc/passwd"}, {}, "server: expected an http"),
        ({"token": "t"}, {"server": "https://[::1"}, {}, "server: expected an http"),
        ({"token": "t"}, {"server": "https://h:99999"}, {}, "server: expected an http"),
        ({"token": "t\nX-Evil: 1"}, {}, {}, "one line"),
        ({"token": ["t"]}, {}, {}, "token: expected a non-empty string"),
        ({"client-certificate": "pki/none.pem", "client-key": "pki/none.pem"}, {}, {},
         "no such file"),
        ({"client-certificate-data": "bm90IHBlbQ=="}, {}, {}, "base64-encoded PEM"),
        ({"client-certificate-data": "%%%"}, {}, {}, "base64-encoded PEM"),
        ({"tokenFile": "../../nope"}, {}, {}, "tokenFile: .*no such file"),
        ({"token": "t"}, {}, {"current-context": "other"}, "no context named 'other'"),
        ({"token": "t"}, {}, {"current-context": None}, "current-context: expected"),
        ({"token": "t"}, {}, {"kind": "Secret"}, "kind: expected Config"),
        ({"token": "t"}, {}, {"clusters": "x"}, "clusters: expected a list"),
        ({"token": "t", "surprise": 1}, {}, {}, "unknown key"),
    ],
)  # fmt: skip
def test_refused_kubeconfigs_are_one_line_errors(tmp_path, pki, user, cluster, top, match):
    path = write(tmp_path, kubeconfig("https://10.0.0.1:6443", user, cluster, **top))
    with pytest.raises(ConfigError, match=match) as err:
        load_kubeconfig(str(path))
    assert "\n" not in str(err.value)
    assert len(str(err.value)) < 300


def test_a_key_that_does_not_match_its_certificate(tmp_path, ca):
    one, two = ca.issue_cert("one"), ca.issue_cert("two")
    one.cert_chain_pems[0].write_to_path(str(tmp_path / "c.pem"))
    two.private_key_pem.write_to_path(str(tmp_path / "k.pem"))
    path = write(tmp_path, kubeconfig("https://x:1", {"client-certificate": "c.pem",
                                                        "client-key": "k.pem"}))  # fmt: skip
    with pytest.raises(ConfigError, match="client-certificate/client-key"):
        load_kubeconfig(str(path))


@pytest.mark.parametrize(
    "content",
    [b"\xff\xfe\x00binary", b"a: [unclosed", b"- just\n- a list\n", b"x" * (MAX_BYTES + 1),
     b"&a [*a, *a]"],
)  # fmt: skip
def test_hostile_files(tmp_path, content):
    path = tmp_path / "kubeconfig"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as err:
        load_kubeconfig(str(path))
    assert "\n" not in str(err.value)


def test_parse_is_pure_over_text():
    with pytest.raises(ConfigError, match="no cluster named"):
        parse_kubeconfig(
            yaml.safe_dump(kubeconfig("https://x:1", {"token": "t"}, clusters=[])), "mem"
        )


def test_cli_refuses_an_exec_plugin_at_startup(tmp_path):
    path = write(tmp_path, kubeconfig("https://10.0.0.1:6443", {"exec": {"command": "id"}}))
    proc = subprocess.run(
        [sys.executable, "-m", "node_exporter_ml", f"--kube.kubeconfig={path}",
         f"--state.dir={tmp_path / 'state'}", "--collector.disable-defaults", "--collector.kube"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("node-exporter-ml: error: ")
    assert "exec plugins are refused" in proc.stderr
    assert proc.stderr.count("\n") == 1


# --- against a fake API server over TLS, as a kubelet host's agent would reach it -----------


@pytest.fixture
async def tls_api(ca: trustme.CA) -> AsyncIterator[FakeApi]:
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    ca.configure_trust(server_ctx)
    server_ctx.verify_mode = ssl.CERT_OPTIONAL  # a token or a client certificate
    fake = FakeApi()
    fake.client_cn = NODE_CN
    fake.add(pod_json(UID, "vllm-0", containers={CID: "server"}))
    await fake.start(server_ctx)
    yield fake
    await fake.stop()


async def _pods_via(tmp_path: Path, user: dict, api: FakeApi) -> list[str]:
    path = write(tmp_path, kubeconfig(api.url, user, {"certificate-authority": "pki/ca.crt"}))
    ctx = CollectContext(make_config(kube_kubeconfig=str(path), kube_node_name="node-a"))
    collector = await asyncio.to_thread(KubeCollector, ctx)  # reads the kubeconfig: off the loop
    assert collector.source is not None
    collector.source.backoff = (0.02, 0.1)
    await collector.start()
    try:
        async with asyncio.timeout(10):
            while not collector.source.pods:  # noqa: ASYNC110 - state owned by the source
                await asyncio.sleep(0.02)
        return [p.name for p in collector.source.pods.values()]
    finally:
        await collector.stop()


async def test_client_certificate_reaches_the_api_server(tmp_path, pki, tls_api):
    user = {"client-certificate": "pki/kubelet-client-current.pem",
            "client-key": "pki/kubelet-client-current.pem"}  # fmt: skip
    assert await _pods_via(tmp_path, user, tls_api) == ["vllm-0"]
    assert set(tls_api.auth) == {None}  # authenticated by the certificate alone


async def test_bearer_token_reaches_the_api_server(tmp_path, pki, tls_api):
    assert await _pods_via(tmp_path, {"token": TOKEN}, tls_api) == ["vllm-0"]
    assert set(tls_api.auth) == {f"Bearer {TOKEN}"}


async def test_token_file_is_reread(tmp_path, pki, tls_api):
    (tmp_path / "tok").write_text(TOKEN + "\n")
    assert await _pods_via(tmp_path, {"tokenFile": "tok"}, tls_api) == ["vllm-0"]


async def test_an_untrusted_server_is_not_sent_the_token(tmp_path, pki, tls_api):
    other = trustme.CA()
    other.cert_pem.write_to_path(str(pki / "ca.crt"))  # the kubeconfig now trusts another CA
    path = write(tmp_path, kubeconfig(tls_api.url, {"token": TOKEN},
                                      {"certificate-authority": "pki/ca.crt"}))  # fmt: skip
    ctx = CollectContext(make_config(kube_kubeconfig=str(path), kube_node_name="node-a"))
    collector = await asyncio.to_thread(KubeCollector, ctx)
    assert collector.source is not None
    collector.source.backoff = (0.02, 0.1)
    await collector.start()
    try:
        async with asyncio.timeout(10):
            while collector.source.last_error in (None, "not synced yet"):  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        assert "CERTIFICATE_VERIFY_FAILED" in collector.source.last_error
        assert tls_api.auth == []  # TLS failed before any request carried the token
    finally:
        await collector.stop()
