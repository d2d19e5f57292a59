"""The exporter-toolkit web config file: TLS server settings and bcrypt basic-auth users."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import ssl
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import bcrypt
import yaml

from node_exporter_ml.options import ConfigError, YamlReader

_TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
# exporter-toolkit's client_auth_type values -> (verify mode, needs a client CA)
_CLIENT_AUTH = {
    "NoClientCert": (ssl.CERT_NONE, False),
    "RequestClientCert": (ssl.CERT_OPTIONAL, False),
    "RequireAnyClientCert": (ssl.CERT_REQUIRED, False),
    "VerifyClientCertIfGiven": (ssl.CERT_OPTIONAL, True),
    "RequireAndVerifyClientCert": (ssl.CERT_REQUIRED, True),
}
_BCRYPT = re.compile(r"\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 token
_TLS_KEYS = (
    "cert_file",
    "key_file",
    "client_auth_type",
    "client_ca_file",
    "min_version",
    "max_version",
    "cipher_suites",
    "prefer_server_cipher_suites",
    "curve_preferences",
)


@dataclass(frozen=True, slots=True)
class TlsConfig:
    """tls_server_config of the web config file."""

    cert_file: str
    key_file: str
    client_auth_type: str = "NoClientCert"
    client_ca_file: str | None = None
    min_version: str = "TLS12"
    max_version: str | None = None
    prefer_server_cipher_suites: bool = True


@dataclass(frozen=True, slots=True)
class WebConfig:
    """The parsed web config: optional TLS, basic-auth users (bcrypt hashes), extra headers."""

    tls: TlsConfig | None = None
    users: Mapping[str, bytes] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)
    auth_off_on_purpose: bool = False
    """The file says ``basic_auth_users: {}``: a reload may drop basic auth."""

    def ssl_context(self) -> ssl.SSLContext | None:
        """Build the server SSL context (None without TLS); raises ConfigError on bad files."""
        if self.tls is None:
            return None
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.configure(ctx)
        return ctx

    def configure(self, ctx: ssl.SSLContext) -> None:
        """Set certificate, versions, client verification and preferences on `ctx`.

        Applied to the live context on reload, so new handshakes use the new settings.
        """
        assert self.tls is not None
        t = self.tls
        # Widen first, so that a new minimum above the old maximum is accepted.
        ctx.maximum_version = ssl.TLSVersion.MAXIMUM_SUPPORTED
        ctx.minimum_version = _TLS_VERSIONS[t.min_version]
        if t.max_version:
            ctx.maximum_version = _TLS_VERSIONS[t.max_version]
        if t.prefer_server_cipher_suites:
            ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
        else:
            ctx.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
        try:
            ctx.load_cert_chain(t.cert_file, t.key_file)
        except (OSError, ssl.SSLError) as err:
            raise ConfigError(
                f"tls_server_config: cannot load cert_file/key_file ({t.cert_file}, "
                f"{t.key_file}): {err}"
            ) from None
        mode, needs_ca = _CLIENT_AUTH[t.client_auth_type]
        if t.client_ca_file:
            try:
                ctx.load_verify_locations(cafile=t.client_ca_file)
            except (OSError, ssl.SSLError) as err:
                raise ConfigError(
                    f"tls_server_config.client_ca_file: cannot load {t.client_ca_file}: {err}"
                ) from None
        elif needs_ca:
            raise ConfigError(
                f"tls_server_config.client_ca_file: required by client_auth_type "
                f"{t.client_auth_type}"
            )
        # Python cannot request a client certificate without verifying it against some CA;
        # RequestClientCert/RequireAnyClientCert therefore need client_ca_file too.
        if mode != ssl.CERT_NONE and not t.client_ca_file:
            raise ConfigError(
                f"tls_server_config.client_ca_file: needed for client_auth_type "
                f"{t.client_auth_type} in this implementation"
            )
        ctx.verify_mode = mode


def check_reload(running: WebConfig, new: WebConfig) -> None:
    """Refuse a reload that would silently weaken the server, or that cannot be applied live.

    Raises:
        ConfigError: naming what changed and what to do instead.
    """
    if running.users and not new.users and not new.auth_off_on_purpose:
        raise ConfigError(
            "basic_auth_users: the new file has none, which would serve without "
            "authentication; write `basic_auth_users: {}` to turn basic auth off on purpose"
        )
    if (running.tls is None) != (new.tls is None):
        what = "off" if new.tls is None else "on"
        raise ConfigError(f"tls_server_config: turning TLS {what} needs a restart")
    # OpenSSL can add trusted CAs to a live context but not remove them.
    old_ca = running.tls.client_ca_file if running.tls else None
    if old_ca and new.tls and new.tls.client_ca_file != old_ca:
        raise ConfigError("tls_server_config.client_ca_file: replacing a client CA needs a restart")


def _path(r: YamlReader, key: str, value: object, base: Path) -> str:
    if not isinstance(value, str) or not value:
        raise r.fail(key, "a file path", value)
    path = base / value  # relative paths are relative to the web config file, as exporter-toolkit
    if not path.is_file():
        raise ConfigError(f"{r.source}: {key}: {path}: no such file")
    return str(path)


def parse_web_config(text: str, source: str, base: Path) -> WebConfig:
    """Parse web config YAML; `base` is the directory relative paths are resolved against."""
    try:
        raw = yaml.safe_load(text)
    except (yaml.YAMLError, ValueError):  # ValueError: an integer past 4,300 digits
        raise ConfigError(f"{source}: expected valid YAML") from None
    r = YamlReader(source)
    top = r.mapping(raw, "", ("tls_server_config", "basic_auth_users", "http_server_config"))
    tls = None
    if top.get("tls_server_config"):
        t = r.mapping(top["tls_server_config"], "tls_server_config", _TLS_KEYS)
        for required in ("cert_file", "key_file"):
            if required not in t:
                raise ConfigError(f"{source}: tls_server_config.{required}: missing")
        auth = t.get("client_auth_type", "NoClientCert")
        if auth not in _CLIENT_AUTH:
            raise r.fail("tls_server_config.client_auth_type", " or ".join(_CLIENT_AUTH), auth)
        versions = {}
        for key in ("min_version", "max_version"):
            if key in t and t[key] not in _TLS_VERSIONS:
                raise r.fail(f"tls_server_config.{key}", " or ".join(_TLS_VERSIONS), t[key])
            versions[key] = t.get(key)
        low, high = versions["min_version"] or "TLS12", versions["max_version"]
        if high and _TLS_VERSIONS[low] > _TLS_VERSIONS[high]:
            raise ConfigError(
                f"{source}: tls_server_config: min_version {low} is above max_version {high}"
            )
        for key in ("cipher_suites", "curve_preferences"):
            if t.get(key):
                raise ConfigError(
                    f"{source}: tls_server_config.{key}: not supported by this implementation "
                    "(Python's ssl uses OpenSSL's secure defaults); remove it"
                )
        prefer = t.get("prefer_server_cipher_suites", True)
        if not isinstance(prefer, bool):
            raise r.fail("tls_server_config.prefer_server_cipher_suites", "true or false", prefer)
        tls = TlsConfig(
            cert_file=_path(r, "tls_server_config.cert_file", t["cert_file"], base),
            key_file=_path(r, "tls_server_config.key_file", t["key_file"], base),
            client_auth_type=auth,
            client_ca_file=_path(r, "tls_server_config.client_ca_file", t["client_ca_file"], base)
            if t.get("client_ca_file")
            else None,
            min_version=low,
            max_version=high,
            prefer_server_cipher_suites=prefer,
        )
    users: dict[str, bytes] = {}
    raw_users = top.get("basic_auth_users") or {}
    if not isinstance(raw_users, Mapping):
        raise r.fail("basic_auth_users", "a mapping of user: bcrypt hash", raw_users)
    for user, hashed in raw_users.items():
        key = f"basic_auth_users.{user}"
        # A malformed hash would make every login fail in silence (bcrypt raises ValueError).
        if not isinstance(hashed, str) or not _BCRYPT.fullmatch(hashed):
            raise r.fail(
                key, "a bcrypt hash ($2a$/$2b$/$2y$, cost 04-31, 60 characters)", "<redacted>"
            )
        users[str(user)] = hashed.encode()
    http = r.mapping(top.get("http_server_config"), "http_server_config", ("http2", "headers"))
    if http.get("http2") is True:
        raise ConfigError(f"{source}: http_server_config.http2: HTTP/2 is not supported; use false")
    headers = http.get("headers") or {}
    if not isinstance(headers, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
    ):
        raise r.fail("http_server_config.headers", "a mapping of strings", headers)
    for name, value in headers.items():
        # A CR or LF would split the header and break every response.
        if not _HEADER_NAME.fullmatch(name) or any(c in value for c in "\r\n\0"):
            raise ConfigError(
                f"{source}: http_server_config.headers.{name!r}: expected a header name and a "
                "value without CR, LF or NUL"
            )
    raw_declared = top.get("basic_auth_users", None)
    return WebConfig(
        tls=tls,
        users=users,
        headers=dict(headers),
        auth_off_on_purpose=isinstance(raw_declared, Mapping) and not raw_declared,
    )


def load_web_config(path: str | None) -> WebConfig:
    """Read --web.config.file (an empty WebConfig when none is given).

    Raises:
        ConfigError: the file cannot be read or is not a valid web config.
    """
    if not path:
        return WebConfig()
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read web config file: {err}") from None
    config = parse_web_config(text, path, Path(path).resolve().parent)
    try:
        config.ssl_context()  # fail at startup, not at the first connection
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    return config


class BasicAuth:
    """Checks Authorization headers against bcrypt hashes, caching verdicts.

    bcrypt costs ~50-250 ms by design; a scrape every 15 s must not pay it each time.
    Verdicts are cached under a keyed SHA-256 of (user, password, hash), so the cache
    never holds a password and a changed hash invalidates the entry.
    """

    def __init__(self, users: Mapping[str, bytes], max_entries: int = 1024) -> None:
        self.users = dict(users)
        self._key = hashlib.sha256(repr(sorted(self.users.items())).encode()).digest()
        self._cache: dict[bytes, bool] = {}
        self._lock = threading.Lock()
        self._max = max_entries
        self._dummy_hash: bytes | None = None

    @property
    def enabled(self) -> bool:
        """True when at least one user is configured."""
        return bool(self.users)

    def cached(self, header: str | None) -> bool | None:
        """The cached verdict for this header, or None when bcrypt must run (cheap).

        An unknown user is not refused at once: that would tell users apart by timing.
        """
        parsed = _parse_basic(header)
        if parsed is None:
            return False
        user, password = parsed
        with self._lock:
            return self._cache.get(self._digest(user, password))

    def verify(self, header: str | None) -> bool:
        """Check the header, running bcrypt when needed (slow: call off the event loop)."""
        parsed = _parse_basic(header)
        if parsed is None:
            return False
        user, password = parsed
        digest = self._digest(user, password)
        with self._lock:
            hit = self._cache.get(digest)
        if hit is not None:
            return hit
        hashed = self.users.get(user)
        try:
            if hashed is None:  # as slow as a wrong password: no timing oracle for user names
                bcrypt.checkpw(password.encode(), self._dummy())
                ok = False
            else:
                ok = bcrypt.checkpw(password.encode(), hashed)
        except ValueError:
            ok = False
        with self._lock:
            if len(self._cache) >= self._max:
                self._cache.clear()
            self._cache[digest] = ok
        return ok

    def _dummy(self) -> bytes:
        """A hash of the configured users' cost, made once (it costs one bcrypt run)."""
        if self._dummy_hash is None:
            cost = max((int(h[4:6]) for h in self.users.values()), default=10)
            self._dummy_hash = bcrypt.hashpw(b"unknown user", bcrypt.gensalt(rounds=cost))
        return self._dummy_hash

    def _digest(self, user: str, password: str) -> bytes:
        return hmac.new(self._key, f"{user}\0{password}".encode(), hashlib.sha256).digest()


def _parse_basic(header: str | None) -> tuple[str, str] | None:
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None
