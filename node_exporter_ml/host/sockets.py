"""Which process listens on a TCP port, from /proc/<pid>/{net,ns/net,fd} under --path.procfs.

Sockets are looked up in every network namespace (each read once, through one of its
processes), so a model server in a pod's namespace is found as well as one on the host's.
Everything here reads files and blocks: call it from a worker thread, rarely, and cache the
answer. Lookups are best effort: what cannot be read (a vanished pid, a missing privilege,
malformed text) is passed over, and an endpoint nobody is found serving gets None.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from node_exporter_ml.host import ParseError
from node_exporter_ml.host.procfs import LISTEN_STATE, ProcFS, TcpSocket

WILDCARDS = frozenset({"0.0.0.0", "::"})


@dataclass(frozen=True, slots=True)
class _Wanted:
    """One endpoint to find: an IP literal and port; loopback ones only in our namespace."""

    address: str
    port: int
    loopback: bool


def _wanted(host: str, port: int) -> _Wanted | None:
    address = "127.0.0.1" if host == "localhost" else host.strip("[]")
    try:
        return _Wanted(address, port, ipaddress.ip_address(address).is_loopback)
    except ValueError:  # a DNS name: where it leads is not ours to know
        return None


def _serves(sock: TcpSocket, want: _Wanted, local: set[str]) -> bool:
    """Whether `sock` accepts connections to `want` (its namespace's local addresses given)."""
    if sock.port != want.port:
        return False
    if sock.address == want.address:
        return True
    if sock.address in WILDCARDS:
        return want.loopback or want.address in local
    return want.loopback and ipaddress.ip_address(sock.address).is_loopback


def _namespace(fs: ProcFS, pid: int | str) -> str | None:
    try:
        return fs.net_namespace(pid)
    except OSError:
        return None


def _listening(fs: ProcFS, members: Iterable[int]) -> tuple[int, list[TcpSocket]] | None:
    """The listening sockets of a namespace, read through its first member still there."""
    for pid in members:
        try:
            return pid, fs.net_tcp(pid, LISTEN_STATE)
        except (OSError, ParseError):
            continue
    return None


def _oldest(fs: ProcFS, pids: Iterable[int]) -> int | None:
    # A pre-forking server shares its socket with its workers: the owner is the oldest.
    owners = []
    for pid in pids:
        try:
            owners.append((fs.read_start(pid)[1], pid))
        except (OSError, ParseError):
            continue
    return min(owners)[1] if owners else None


def _local(fs: ProcFS, pid: int) -> set[str]:
    try:
        return fs.local_addresses(pid)
    except OSError:
        return set()


def _held(fs: ProcFS, pid: int) -> set[int]:
    try:
        return fs.socket_inodes(pid)
    except OSError:
        return set()


def find_listening_pids(
    procfs_root: str, endpoints: Sequence[tuple[str, int]], pids: Iterable[int] | None = None
) -> list[int | None]:
    """For each (host, port), the pid owning a TCP socket that listens there, else None.

    `host` is an IP literal or `localhost` (a DNS name gets None). A loopback host is
    served only from the network namespace of --path.procfs's `self` (the agent's); another
    address from the namespace where a socket is bound to it, or bound to a wildcard
    address while the namespace holds it as a local address, so a remote address never
    matches a local process listening on the same port. The owner is matched by socket
    inode in /proc/<pid>/fd, which needs the privilege to read other processes' fd
    directories; of several holders (a pre-forking server) the oldest. Candidates are
    `pids`, else every pid. Each namespace's table is read once, and fds only in the
    namespaces that have a matching socket.
    """
    fs = ProcFS(procfs_root)
    wanted = [_wanted(host, port) for host, port in endpoints]
    found: list[int | None] = [None] * len(endpoints)
    if not any(wanted):
        return found
    try:
        candidates = fs.pids() if pids is None else list(pids)
    except OSError:
        return found
    own = _namespace(fs, "self")
    namespaces: dict[str, list[int]] = {}
    for pid in candidates:
        namespaces.setdefault(_namespace(fs, pid) or f"unknown:{pid}", []).append(pid)
    todo = {i for i, w in enumerate(wanted) if w is not None}
    for ns, members in namespaces.items():
        here = own is None or ns == own  # unknown: every namespace may be ours
        asked = {i: w for i in todo if (w := wanted[i]) is not None and (here or not w.loopback)}
        table = _listening(fs, members) if asked else None
        if table is None:
            continue
        reader, sockets = table
        remote_ports = {w.port for w in asked.values() if not w.loopback}
        wildcard = any(s.address in WILDCARDS and s.port in remote_ports for s in sockets)
        local = _local(fs, reader) if wildcard else set()
        inodes = {i: {s.inode for s in sockets if _serves(s, w, local)} for i, w in asked.items()}
        inodes = {i: held for i, held in inodes.items() if held}
        if not inodes:
            continue
        held = {pid: _held(fs, pid) for pid in members}
        for i, wanted_inodes in inodes.items():
            owner = _oldest(fs, (pid for pid, fds in held.items() if fds & wanted_inodes))
            if owner is not None:
                found[i] = owner
                todo.discard(i)
    return found


def find_listening_pid(
    procfs_root: str, port: int, host: str = "localhost", pids: Iterable[int] | None = None
) -> int | None:
    """The pid owning a TCP socket listening on `host:port`, else None (see find_listening_pids)."""
    return find_listening_pids(procfs_root, [(host, port)], pids)[0]


def read_listen_urls(procfs_root: str, pid: int, ports: Iterable[int]) -> list[tuple[int, str]]:
    """The (port, host) pairs where `pid` listens on one of `ports`, as the agent reaches them.

    A wildcard or loopback socket in the agent's namespace is reached at 127.0.0.1; in
    another namespace (a pod's) a wildcard one at that namespace's lowest non-loopback
    IPv4 address, and a loopback one not at all.
    """
    fs = ProcFS(procfs_root)
    wanted = set(ports)
    try:
        sockets = [s for s in fs.net_tcp(pid, LISTEN_STATE) if s.port in wanted]
        owned = fs.socket_inodes(pid) if sockets else set()
    except (OSError, ParseError):
        return []
    sockets = [s for s in sockets if s.inode in owned]
    if not sockets:
        return []
    mine, theirs = _namespace(fs, "self"), _namespace(fs, pid)
    shared = mine is None or theirs is None or mine == theirs  # unknown counts as shared
    addresses = [] if shared else [ipaddress.ip_address(a) for a in _local(fs, pid)]
    local = sorted(
        a for a in addresses if isinstance(a, ipaddress.IPv4Address) and not a.is_loopback
    )
    out: list[tuple[int, str]] = []
    for s in sockets:
        if s.address in WILDCARDS:
            host = "127.0.0.1" if shared else (str(local[0]) if local else "")
        elif ipaddress.ip_address(s.address).is_loopback:
            host = s.address if shared else ""
        else:
            host = s.address
        if host and (s.port, host) not in out:
            out.append((s.port, host))
    return out
