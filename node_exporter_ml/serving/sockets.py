"""Which process listens on a TCP port, from /proc/<pid>/net/tcp{,6} and /proc/<pid>/fd.

`parse_*` functions are pure; `read_*`/`find_*` read files and block, so callers run them
in a worker thread. Each process's own `net/tcp` is read, so sockets in a pod's network
namespace are found as well as the host's.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

_LISTEN = "0A"
_WILDCARDS = frozenset({"0.0.0.0", "::"})


@dataclass(frozen=True, slots=True)
class ListenSocket:
    """A listening TCP socket: its local address, port and inode."""

    address: str
    port: int
    inode: int


def _decode_address(hex_addr: str) -> str:
    raw = bytes.fromhex(hex_addr)
    if len(raw) == 4:
        return str(ipaddress.IPv4Address(raw[::-1]))
    # IPv6: four 32-bit words, each in host (little-endian) order.
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
    addr = ipaddress.IPv6Address(words)
    return str(addr.ipv4_mapped) if addr.ipv4_mapped is not None else str(addr)


def parse_proc_net_tcp(text: str) -> list[ListenSocket]:
    """The listening sockets in the text of /proc/net/tcp or /proc/net/tcp6 (bad rows skipped)."""
    out = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10 or fields[3] != _LISTEN:
            continue
        addr, _, port = fields[1].partition(":")
        try:
            out.append(ListenSocket(_decode_address(addr), int(port, 16), int(fields[9])))
        except ValueError:
            continue
    return out


def parse_fib_trie_local(text: str) -> list[str]:
    """The local IPv4 addresses in /proc/<pid>/net/fib_trie (`/32 host LOCAL` entries)."""
    out: list[str] = []
    previous = ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("/32 host LOCAL") and previous.startswith("|--"):
            addr = previous[3:].strip()
            if addr not in out:
                out.append(addr)
        previous = stripped
    return out


def socket_inode(link: str) -> int | None:
    """The inode of an fd link target like `socket:[12345]` (None for other files)."""
    if link.startswith("socket:[") and link.endswith("]"):
        try:
            return int(link[8:-1])
        except ValueError:
            return None
    return None


def _read(path: str) -> str:
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def read_listening(procfs: str, pid: int) -> list[ListenSocket]:
    """The listening sockets of the network namespace `pid` is in."""
    base = os.path.join(procfs, str(pid), "net")
    return parse_proc_net_tcp(_read(os.path.join(base, "tcp"))) + parse_proc_net_tcp(
        _read(os.path.join(base, "tcp6"))
    )


def read_socket_inodes(procfs: str, pid: int) -> set[int]:
    """The inodes of the sockets `pid` holds open (empty if it vanished or is not readable)."""
    fd_dir = os.path.join(procfs, str(pid), "fd")
    inodes: set[int] = set()
    try:
        names = os.listdir(fd_dir)
    except OSError:
        return inodes
    for name in names:
        try:
            inode = socket_inode(os.readlink(os.path.join(fd_dir, name)))
        except OSError:
            continue
        if inode is not None:
            inodes.add(inode)
    return inodes


def read_local_addresses(procfs: str, pid: int) -> list[str]:
    """The local IPv4 addresses of the network namespace `pid` is in."""
    return parse_fib_trie_local(_read(os.path.join(procfs, str(pid), "net", "fib_trie")))


def same_netns(procfs: str, pid: int) -> bool:
    """True when `pid` shares the agent's network namespace (unknown counts as shared)."""
    mine, theirs = _netns(procfs, "self"), _netns(procfs, pid)
    return mine is None or theirs is None or mine == theirs


def _address_matches(sock: ListenSocket, host: str, local: Iterable[str]) -> bool:
    if sock.address == host:
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    if sock.address in _WILDCARDS:
        return ip.is_loopback or host in local
    return ip.is_loopback and ipaddress.ip_address(sock.address).is_loopback


def _netns(procfs: str, pid: int | str) -> str | None:
    try:
        return os.readlink(os.path.join(procfs, str(pid), "ns", "net"))
    except OSError:
        return None


def _host_ip(host: str) -> tuple[str, bool] | None:
    host = "127.0.0.1" if host == "localhost" else host.strip("[]")
    try:
        return host, ipaddress.ip_address(host).is_loopback
    except ValueError:
        return None


def find_listening_pids(
    procfs: str, endpoints: Sequence[tuple[str, int]], pids: Iterable[int]
) -> list[int | None]:
    """For each (host, port), the first of `pids` holding a listening socket serving it.

    Each network namespace's socket table is read once, and a process's fds only when
    its namespace has a matching socket, so scanning every pid of a node stays cheap.
    `host` must be an IP literal or `localhost` (else None); a loopback host only
    matches sockets in the agent's own network namespace.
    """
    wanted = [_host_ip(h) for h, _ in endpoints]
    found: list[int | None] = [None] * len(endpoints)
    todo = {i for i, w in enumerate(wanted) if w is not None}
    own_ns = _netns(procfs, "self")
    tables: dict[str, dict[int, set[int]]] = {}  # netns -> target index -> inodes
    for pid in pids:
        if not todo:
            break
        ns = _netns(procfs, pid) or f"unknown:{pid}"
        matches = tables.get(ns)
        if matches is None:
            socks = read_listening(procfs, pid)
            local: list[str] | None = None
            matches = {}
            for i in todo:
                host, loopback = wanted[i]  # type: ignore[misc]
                port = endpoints[i][1]
                if loopback and own_ns is not None and ns != own_ns:
                    continue
                candidates = [s for s in socks if s.port == port]
                if candidates and not loopback and local is None:
                    local = read_local_addresses(procfs, pid)
                inodes = {s.inode for s in candidates if _address_matches(s, host, local or ())}
                if inodes:
                    matches[i] = inodes
            tables[ns] = matches
        pending = [i for i in matches if i in todo]
        if not pending:
            continue
        held = read_socket_inodes(procfs, pid)
        for i in pending:
            if matches[i] & held:
                found[i] = pid
                todo.discard(i)
    return found


def find_listening_pid(procfs: str, host: str, port: int, pids: Iterable[int]) -> int | None:
    """The first of `pids` holding a listening socket that serves `host:port`, else None."""
    return find_listening_pids(procfs, [(host, port)], pids)[0]


def all_pids(procfs: str) -> list[int]:
    """Every pid under the procfs root."""
    try:
        return sorted(int(n) for n in os.listdir(procfs) if n.isdigit())
    except OSError:
        return []


def read_listen_urls(procfs: str, pid: int, ports: Iterable[int]) -> list[tuple[int, str]]:
    """The (port, host) pairs where `pid` listens on one of `ports`, as the agent can reach them.

    A wildcard or loopback socket in the agent's namespace is reached at 127.0.0.1; in
    another namespace (a pod) at that namespace's first non-loopback IPv4 address.
    """
    wanted = set(ports)
    socks = [s for s in read_listening(procfs, pid) if s.port in wanted]
    if not socks:
        return []
    owned = read_socket_inodes(procfs, pid)
    socks = [s for s in socks if s.inode in owned]
    if not socks:
        return []
    shared = same_netns(procfs, pid)
    local = [] if shared else [a for a in read_local_addresses(procfs, pid) if a != "127.0.0.1"]
    out: list[tuple[int, str]] = []
    for s in socks:
        if s.address in _WILDCARDS:
            host = "127.0.0.1" if shared else (local[0] if local else "")
        elif ipaddress.ip_address(s.address).is_loopback:
            host = s.address if shared else ""
        else:
            host = s.address
        if host and (s.port, host) not in out:
            out.append((s.port, host))
    return out
