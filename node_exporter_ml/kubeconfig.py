"""--kube.kubeconfig: the API server, CA and credentials of a kubeconfig's current context.

For the agent run as a systemd service on a kubelet host (no ServiceAccount): the kubelet's
own kubeconfig (/etc/kubernetes/kubelet.conf: a client certificate that the Node authorizer
lets list this node's pods) or any kubeconfig with a client certificate or a bearer token.
Exec and auth-provider plugins are refused: they run programs named in the file. The file is
hostile input like any other: every key is checked and every problem is one line.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import ssl
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from node_exporter_ml.options import ConfigError, YamlReader, http_url

MAX_BYTES = 4 * 1024 * 1024  # kubeconfigs with embedded certificates are kilobytes
# What a user entry may hold; each refused key names why.
_REFUSED_USER_KEYS = {
    "exec": "exec plugins are refused (they run a program named in the file)",
    "auth-provider": "auth-provider plugins are refused (they run a program or a flow)",
    "username": "basic auth is not supported by the API server any more",
    "password": "basic auth is not supported by the API server any more",
    "as": "impersonation is not supported",
    "as-groups": "impersonation is not supported",
    "as-uid": "impersonation is not supported",
    "as-user-extra": "impersonation is not supported",
}


@dataclass(frozen=True, slots=True)
class PemSource:
    """PEM text given inline (`*-data`, base64 in the file) or as a path."""

    path: str | None = None
    data: bytes | None = None


@dataclass(frozen=True, slots=True)
class Kubeconfig:
    """The parts of a kubeconfig's current context the agent uses."""

    source: str
    server: str
    ca: PemSource | None = None
    client_cert: PemSource | None = None
    client_key: PemSource | None = None
    token: str | None = None
    token_file: str | None = None

    def ssl_context(self) -> ssl.SSLContext:
        """A verifying TLS context with the CA and the client certificate (blocking: files).

        Raises:
            ConfigError: a certificate, key or CA cannot be loaded.
        """
        try:
            if self.ca is None:
                ctx = ssl.create_default_context()
            elif self.ca.data is not None:
                ctx = ssl.create_default_context(cadata=self.ca.data.decode("ascii", "replace"))
            else:
                ctx = ssl.create_default_context(cafile=self.ca.path)
        except (ssl.SSLError, OSError, ValueError) as err:
            raise ConfigError(f"{self.source}: certificate-authority: {_reason(err)}") from None
        if self.client_cert is not None and self.client_key is not None:
            with _pem_files(self.client_cert, self.client_key) as (cert, key):
                try:
                    ctx.load_cert_chain(cert, key)
                except (ssl.SSLError, OSError) as err:
                    raise ConfigError(
                        f"{self.source}: client-certificate/client-key: {_reason(err)}"
                    ) from None
        return ctx


def _reason(err: BaseException) -> str:
    if isinstance(err, OSError) and err.strerror:
        return f"{err.strerror}{f' ({err.filename})' if err.filename else ''}"
    return str(err) or type(err).__name__


@contextlib.contextmanager
def _pem_files(*sources: PemSource) -> Iterator[list[str]]:
    """Paths for PEM sources: inline data goes to 0600 files in a private directory.

    ssl can only load a certificate chain from files (as the kubernetes Python client does
    it, the files exist only while the context loads them).
    """
    with tempfile.TemporaryDirectory(prefix="nodeml-kubeconfig-") as tmp:
        paths = []
        for i, src in enumerate(sources):
            if src.data is None:
                paths.append(src.path or "")
                continue
            path = os.path.join(tmp, f"pem{i}")
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(src.data)
            paths.append(path)
        yield paths


def _named(r: YamlReader, entries: object, kind: str, name: str) -> Mapping[str, Any]:
    """The `kind` (cluster, user, context) called `name` in a list of {name, <kind>}."""
    for i, entry in enumerate(r.items(entries, f"{kind}s")):
        m = r.mapping(entry, f"{kind}s[{i}]", ("name", kind, "extensions"))
        if m.get("name") == name:
            where = f"{kind}s[{i}].{kind}"
            value = m.get(kind)
            for refused, why in _REFUSED_USER_KEYS.items():
                if isinstance(value, Mapping) and refused in value:
                    raise ConfigError(f"{r.source}: {where}.{refused}: {why}")
            return r.mapping(value, where, _ALLOWED[kind])
    raise ConfigError(f"{r.source}: {kind}s: no {kind} named {name!r}")


_ALLOWED = {
    "cluster": (
        "server",
        "certificate-authority",
        "certificate-authority-data",
        "insecure-skip-tls-verify",
        "tls-server-name",
        "proxy-url",
        "disable-compression",
        "extensions",
    ),
    "user": (
        "client-certificate",
        "client-certificate-data",
        "client-key",
        "client-key-data",
        "token",
        "tokenFile",
        "extensions",
    ),
    "context": ("cluster", "user", "namespace", "extensions"),
}


def _pem(r: YamlReader, m: Mapping[str, Any], key: str, base: Path) -> PemSource | None:
    """`key` (a path, relative to the kubeconfig's directory) or `key-data` (base64 PEM)."""
    if f"{key}-data" in m:
        text = r.string(m[f"{key}-data"], f"{key}-data")
        try:
            data = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise r.fail(f"{key}-data", "base64-encoded PEM", text[:20] + "...") from None
        if b"-----BEGIN " not in data:
            raise r.fail(f"{key}-data", "base64-encoded PEM", "data without a PEM block")
        return PemSource(data=data)
    if key in m:
        path = base / r.string(m[key], key)
        if not path.is_file():
            raise ConfigError(f"{r.source}: {key}: {path}: no such file")
        return PemSource(path=str(path))
    return None


def parse_kubeconfig(text: str, source: str, base: Path | None = None) -> Kubeconfig:
    """The current context of a kubeconfig's text; relative paths resolve against `base`.

    Raises:
        ConfigError: not a kubeconfig, no usable current context, a refused plugin, or
            a file it names is missing.
    """
    r = YamlReader(source)
    base = base if base is not None else Path(source).parent
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{source}: expected a kubeconfig (YAML: {type(err).__name__})") from None
    top = r.mapping(
        raw,
        "",
        (
            "apiVersion",
            "kind",
            "clusters",
            "users",
            "contexts",
            "current-context",
            "preferences",
            "extensions",
        ),
    )
    if top.get("kind", "Config") != "Config":
        raise r.fail("kind", "Config", top.get("kind"))
    if "current-context" not in top:
        raise ConfigError(f"{source}: current-context: missing (expected a context name)")
    current = r.string(top["current-context"], "current-context")
    context = _named(r, top.get("contexts"), "context", current)
    cluster = _named(r, top.get("clusters"), "cluster", r.string(context.get("cluster"), "cluster"))
    user_name = context.get("user")
    user = _named(r, top.get("users"), "user", r.string(user_name, "user")) if user_name else {}
    if "server" not in cluster:
        raise ConfigError(f"{source}: clusters[{context['cluster']}].server: missing")
    server = r.string(cluster["server"], "server")
    if not http_url(server):
        raise r.fail("server", "an http(s) URL", server)
    if cluster.get("insecure-skip-tls-verify") is True:
        raise ConfigError(
            f"{source}: insecure-skip-tls-verify: refused (the agent sends credentials; "
            "give certificate-authority or certificate-authority-data)"
        )
    for unsupported in ("proxy-url", "tls-server-name"):
        if unsupported in cluster:
            raise ConfigError(
                f"{source}: {unsupported}: not supported (the agent reaches the server URL "
                "directly and verifies its own name)"
            )
    cert, key = _pem(r, user, "client-certificate", base), _pem(r, user, "client-key", base)
    if (cert is None) != (key is None):
        raise ConfigError(f"{source}: client-certificate and client-key: give both or neither")
    token_file = None
    if "tokenFile" in user:
        token_file = str(base / r.string(user["tokenFile"], "tokenFile"))
        if not os.path.isfile(token_file):
            raise ConfigError(f"{source}: tokenFile: {token_file}: no such file")
    token = r.string(user["token"], "token") if "token" in user else None
    if token is not None and any(c in token for c in "\r\n\0"):
        raise r.fail("token", "a bearer token on one line", "a value with a line break")
    return Kubeconfig(
        source=source,
        server=server.rstrip("/"),
        ca=_pem(r, cluster, "certificate-authority", base),
        client_cert=cert,
        client_key=key,
        token=token,
        token_file=token_file,
    )


def load_kubeconfig(path: str) -> Kubeconfig:
    """Read and parse --kube.kubeconfig; its certificates are loaded once to check them.

    Raises:
        ConfigError: the file is unreadable, too large, or not a usable kubeconfig.
    """
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_BYTES + 1)
    except OSError as err:
        raise ConfigError(f"--kube.kubeconfig: {path}: {err.strerror or err}") from None
    if len(data) > MAX_BYTES:
        raise ConfigError(f"--kube.kubeconfig: {path}: larger than {MAX_BYTES} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"--kube.kubeconfig: {path}: expected UTF-8 text") from None
    config = parse_kubeconfig(text, path, Path(path).resolve().parent)
    config.ssl_context()  # a bad certificate or key is a startup error, not a retry loop
    return config
