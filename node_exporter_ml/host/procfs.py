"""ProcFS(root): per-process files under --path.procfs; the parse_* helpers are pure text -> data.

Every reader raises `FileNotFoundError` / `ProcessLookupError` when the pid vanished
(callers skip it silently), `PermissionError` when the agent lacks the privilege, and
`ParseError` for malformed kernel text.
"""

from __future__ import annotations

import ipaddress
import os
import sys
from dataclasses import dataclass

from node_exporter_ml.host import ParseError

LISTEN_STATE = "0A"  # TCP_LISTEN in /proc/net/tcp's `st` column


@dataclass(frozen=True, slots=True)
class ProcStat:
    """The fields of /proc/<pid>/stat we use; times in clock ticks, rss in pages."""

    pid: int
    comm: str
    state: str
    ppid: int
    utime_ticks: int
    stime_ticks: int
    num_threads: int
    starttime_ticks: int
    rss_pages: int


@dataclass(frozen=True, slots=True)
class ProcStatus:
    """The fields of /proc/<pid>/status we use (None when the kernel omits one)."""

    rss_bytes: int | None = None
    threads: int | None = None
    voluntary_ctxt_switches: int | None = None
    nonvoluntary_ctxt_switches: int | None = None


@dataclass(frozen=True, slots=True)
class CgroupLine:
    """One line of /proc/<pid>/cgroup: `ID:controllers:path` (v2 is `0::path`)."""

    hierarchy_id: int
    controllers: tuple[str, ...]
    path: str
    deleted: bool = False


@dataclass(frozen=True, slots=True)
class TcpSocket:
    """One row of /proc/net/tcp or tcp6."""

    address: str
    port: int
    state: str
    inode: int


def parse_stat(text: str, path: str = "stat") -> ProcStat:
    """Parse /proc/<pid>/stat; comm may hold spaces and parentheses, so split at the last ')'.

    Raises:
        ParseError: the text is not a stat line.
    """
    open_paren, close_paren = text.find("("), text.rfind(")")
    if open_paren < 0 or close_paren < open_paren:
        raise ParseError(path, "expected 'pid (comm) state ...'")
    rest = text[close_paren + 1 :].split()
    try:
        # rest[0] is field 3 (state); field n of proc(5) is rest[n - 3].
        return ProcStat(
            pid=int(text[:open_paren]),
            comm=text[open_paren + 1 : close_paren],
            state=rest[0],
            ppid=int(rest[1]),
            utime_ticks=int(rest[11]),
            stime_ticks=int(rest[12]),
            num_threads=int(rest[17]),
            starttime_ticks=int(rest[19]),
            rss_pages=int(rest[21]),
        )
    except (IndexError, ValueError) as err:
        raise ParseError(path, f"expected at least 24 numeric fields ({err})") from err


def parse_stat_start(text: str, path: str = "stat") -> tuple[str, int]:
    """(comm, starttime ticks) of a /proc/<pid>/stat line, parsing only what that needs.

    Raises:
        ParseError: the text is not a stat line.
    """
    open_paren, close_paren = text.find("("), text.rfind(")")
    try:
        if open_paren < 0 or close_paren < open_paren:
            raise ValueError("no (comm)")
        return text[open_paren + 1 : close_paren], int(text[close_paren + 2 :].split(" ", 20)[19])
    except (IndexError, ValueError) as err:
        raise ParseError(path, f"expected 'pid (comm) state ... starttime' ({err})") from err


_STATUS_KEYS = {
    "VmRSS": "rss_bytes",
    "Threads": "threads",
    "voluntary_ctxt_switches": "voluntary_ctxt_switches",
    "nonvoluntary_ctxt_switches": "nonvoluntary_ctxt_switches",
}


def parse_status(text: str, path: str = "status") -> ProcStatus:
    """Parse the fields we use from /proc/<pid>/status ("Key: value [kB]" lines).

    Raises:
        ParseError: a field we use is not a number.
    """
    values: dict[str, int] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        field_name = _STATUS_KEYS.get(key)
        if not sep or field_name is None:
            continue
        parts = value.split()
        try:
            number = int(parts[0])
        except (IndexError, ValueError) as err:
            raise ParseError(path, f"{key}: expected a number, got {value.strip()!r}") from err
        if len(parts) > 1 and parts[1] == "kB":
            number *= 1024
        values[field_name] = number
    return ProcStatus(**values)


def parse_cmdline(data: bytes) -> tuple[str, ...]:
    """Split /proc/<pid>/cmdline (NUL-separated, NUL-terminated) into arguments."""
    if not data:
        return ()
    return tuple(data.rstrip(b"\0").decode("utf-8", "replace").split("\0"))


def parse_cgroup_file(text: str, path: str = "cgroup") -> tuple[CgroupLine, ...]:
    """Parse /proc/<pid>/cgroup for v1, v2 and hybrid hosts.

    The path may itself contain ':' (runc's "slice:prefix:name" form on v1 + systemd),
    so only the first two colons separate fields. A removed cgroup reads " (deleted)".

    Raises:
        ParseError: a line is not `ID:controllers:path`.
    """
    lines = []
    for line in text.splitlines():
        if not line.strip():
            continue
        parts = line.split(":", 2)
        if len(parts) != 3 or not parts[0].isdigit() or not parts[2].startswith("/"):
            raise ParseError(path, f"expected 'ID:controllers:/path', got {line!r}")
        cgroup_path, deleted = parts[2], False
        if cgroup_path.endswith(" (deleted)"):
            cgroup_path, deleted = cgroup_path[: -len(" (deleted)")], True
        controllers = tuple(c for c in parts[1].split(",") if c)
        lines.append(CgroupLine(int(parts[0]), controllers, cgroup_path, deleted))
    return tuple(lines)


def parse_boot_time(text: str, path: str = "stat") -> float:
    """The `btime` of /proc/stat: boot time in seconds since the epoch.

    Raises:
        ParseError: there is no btime line.
    """
    for line in text.splitlines():
        if line.startswith("btime "):
            try:
                return float(line.split()[1])
            except (IndexError, ValueError) as err:
                raise ParseError(path, f"bad btime line {line!r}") from err
    raise ParseError(path, "no btime line")


def _hex_address(text: str) -> str:
    # /proc/net/tcp prints addresses as host-order 32-bit words in hex.
    # An IPv4-mapped IPv6 address (a dual-stack socket) is given as the IPv4 address.
    words = [bytes.fromhex(text[i : i + 8])[::-1] for i in range(0, len(text), 8)]
    ip = ipaddress.ip_address(b"".join(words))
    mapped = getattr(ip, "ipv4_mapped", None)
    return str(mapped or ip)


def parse_net_tcp(text: str, path: str = "net/tcp", state: str | None = None) -> list[TcpSocket]:
    """Parse /proc/net/tcp or tcp6 (header line, then one socket per line).

    With `state` (e.g. LISTEN_STATE) only the rows in that state are decoded: a busy
    server's table is mostly connections. Rows without a state column are then passed over.

    Raises:
        ParseError: a row to decode does not have the kernel's columns.
    """
    sockets = []
    for line in text.splitlines()[1:]:
        cols = line.split()
        if not cols or (state is not None and (len(cols) < 4 or cols[3] != state)):
            continue
        try:
            address, _, port = cols[1].partition(":")
            sockets.append(TcpSocket(_hex_address(address), int(port, 16), cols[3], int(cols[9])))
        except (IndexError, ValueError) as err:
            raise ParseError(path, f"bad socket row {line.strip()!r}") from err
    return sockets


def parse_socket_inode(link: str) -> int | None:
    """The inode of an fd link "socket:[12345]", None for anything else."""
    if link.startswith("socket:[") and link.endswith("]"):
        try:
            return int(link[8:-1])
        except ValueError:
            return None
    return None


def parse_fib_trie_local(text: str) -> set[str]:
    """Local IPv4 addresses of a network namespace from /proc/<pid>/net/fib_trie.

    An address is local when its leaf is followed by a `/32 host LOCAL` line.
    """
    local, last = set(), ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith(("|-- ", "+-- ")):
            last = stripped[4:].split()[0]
        elif stripped.startswith("/32 host LOCAL") and last:
            local.add(last)
    return local


def parse_if_inet6(text: str) -> set[str]:
    """Local IPv6 addresses of a network namespace from /proc/net/if_inet6 (32-hex first column)."""
    local = set()
    for line in text.splitlines():
        cols = line.split()
        if cols and len(cols[0]) == 32:
            try:
                local.add(str(ipaddress.IPv6Address(bytes.fromhex(cols[0]))))
            except ValueError:
                continue
    return local


class ProcFS:
    """Reads per-process files below `root` (--path.procfs)."""

    def __init__(self, root: str = "/proc") -> None:
        self.root = root
        self.clock_ticks = os.sysconf("SC_CLK_TCK")
        self.page_size = os.sysconf("SC_PAGE_SIZE")
        self._boot_time: float | None = None

    def path(self, *parts: object) -> str:
        """A path below the root."""
        return "/".join((self.root, *map(str, parts)))

    def _read_bytes(self, *parts: object, limit: int | None = None) -> bytes:
        # os.open/os.read: a third of open()'s cost, which matters when listing every pid.
        fd = os.open(self.path(*parts), os.O_RDONLY | os.O_CLOEXEC)
        try:
            chunks: list[bytes] = []
            left = sys.maxsize if limit is None else limit
            # Until EOF: seq_file may return less than asked before the end.
            while left > 0 and (chunk := os.read(fd, min(left, 65536))):
                chunks.append(chunk)
                left -= len(chunk)
        finally:
            os.close(fd)
        return b"".join(chunks)

    def _read(self, *parts: object) -> str:
        return self._read_bytes(*parts).decode("utf-8", "replace")

    def pids(self) -> list[int]:
        """Every pid directory below the root, ascending (a cheap listing, no file reads)."""
        with os.scandir(self.root) as entries:
            return sorted(int(e.name) for e in entries if e.name.isdigit())

    def read_start(self, pid: int) -> tuple[str, int]:
        """(comm, starttime) from /proc/<pid>/stat: the cheap identity of a pid."""
        path = f"{self.root}/{pid}/stat"
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            data = os.read(fd, 4096)  # a stat line is well under a page
        finally:
            os.close(fd)
        return parse_stat_start(data.decode("utf-8", "replace"), path)

    def read_stat(self, pid: int) -> ProcStat:
        """Parse /proc/<pid>/stat."""
        return parse_stat(self._read(pid, "stat"), self.path(pid, "stat"))

    def read_status(self, pid: int) -> ProcStatus:
        """Parse /proc/<pid>/status."""
        return parse_status(self._read(pid, "status"), self.path(pid, "status"))

    def read_comm(self, pid: int) -> str:
        """/proc/<pid>/comm without its newline."""
        return self._read(pid, "comm").rstrip("\n")

    def read_cmdline(self, pid: int) -> tuple[str, ...]:
        """/proc/<pid>/cmdline as arguments (empty for kernel threads and zombies)."""
        return parse_cmdline(self._read_bytes(pid, "cmdline"))

    def read_environ(self, pid: int, limit: int) -> bytes:
        """The first `limit` bytes of /proc/<pid>/environ (same uid or CAP_SYS_PTRACE)."""
        return self._read_bytes(pid, "environ", limit=limit)

    def read_cgroup(self, pid: int) -> tuple[CgroupLine, ...]:
        """Parse /proc/<pid>/cgroup."""
        return parse_cgroup_file(self._read(pid, "cgroup"), self.path(pid, "cgroup"))

    def count_open_fds(self, pid: int) -> int:
        """How many entries /proc/<pid>/fd has (needs the privilege to read it)."""
        return len(os.listdir(self.path(pid, "fd")))

    def socket_inodes(self, pid: int) -> set[int]:
        """Inodes of the sockets open in /proc/<pid>/fd."""
        fd_dir = self.path(pid, "fd")
        inodes = set()
        for name in os.listdir(fd_dir):
            try:
                inode = parse_socket_inode(os.readlink(os.path.join(fd_dir, name)))
            except OSError:
                continue
            if inode is not None:
                inodes.add(inode)
        return inodes

    def boot_time(self) -> float:
        """Boot time (epoch seconds) from /proc/stat, read once."""
        if self._boot_time is None:
            self._boot_time = parse_boot_time(self._read("stat"), self.path("stat"))
        return self._boot_time

    def net_tcp(self, pid: int, state: str | None = None) -> list[TcpSocket]:
        """TCP sockets of `pid`'s network namespace, optionally only those in `state`.

        A missing tcp6 (IPv6 disabled) is skipped; a missing tcp means the pid vanished.
        """
        sockets = parse_net_tcp(self._read(pid, "net", "tcp"), self.path(pid, "net", "tcp"), state)
        try:
            text = self._read(pid, "net", "tcp6")
        except FileNotFoundError:
            return sockets
        return sockets + parse_net_tcp(text, self.path(pid, "net", "tcp6"), state)

    def net_namespace(self, pid: int | str) -> str:
        """The network namespace link of `pid` or "self" ("net:[4026531840]")."""
        return os.readlink(self.path(pid, "ns", "net"))

    def local_addresses(self, pid: int) -> set[str]:
        """Local addresses of `pid`'s network namespace (a missing table: none from it)."""
        local: set[str] = set()
        for name, parse in (("fib_trie", parse_fib_trie_local), ("if_inet6", parse_if_inet6)):
            try:
                local |= parse(self._read(pid, "net", name))
            except FileNotFoundError:
                continue
        return local


def parse_loadavg(text: str, path: str = "loadavg") -> tuple[float, float, float]:
    """The 1, 5 and 15 minute load averages of /proc/loadavg ("0.52 0.58 0.59 2/1184 9127").

    Raises:
        ParseError: the first three fields are not non-negative numbers.
    """
    fields = text.split()[:3]
    try:
        one, five, fifteen = (float(f) for f in fields)
    except ValueError as err:
        raise ParseError(path, f"expected three load averages, got {text[:60]!r}") from err
    if not all(0.0 <= v < float("inf") for v in (one, five, fifteen)):
        raise ParseError(path, f"expected three load averages, got {text[:60]!r}")
    return one, five, fifteen
