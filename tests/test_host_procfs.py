"""procfs parsers (tables) and ProcFS / host.sockets.find_listening_pid over fixture trees."""

from __future__ import annotations

from pathlib import Path

import pytest

from node_exporter_ml.host import ParseError
from node_exporter_ml.host.procfs import (
    CgroupLine,
    ProcFS,
    parse_boot_time,
    parse_cgroup_file,
    parse_cmdline,
    parse_fib_trie_local,
    parse_if_inet6,
    parse_net_tcp,
    parse_socket_inode,
    parse_stat,
    parse_stat_start,
    parse_status,
)
from node_exporter_ml.host.sockets import find_listening_pid
from tools.host_trees import BTIME, FakeProc, stat_line, status_text, write_proc


@pytest.mark.parametrize(
    ("comm"),
    ["python3", "vllm serve", "a) (b", "x)", ""],
    ids=["plain", "space in comm", "parens in comm", "trailing paren", "empty comm"],
)
def test_parse_stat_comm_forms(comm: str) -> None:
    st = parse_stat(
        stat_line(
            FakeProc(pid=415, comm=comm, utime=900, stime=30, threads=9, starttime=77, rss_kb=4096)
        )
    )
    assert (st.pid, st.comm, st.state, st.ppid) == (415, comm, "S", 1)
    assert (st.utime_ticks, st.stime_ticks, st.num_threads, st.starttime_ticks) == (900, 30, 9, 77)
    assert st.rss_pages == 1024


@pytest.mark.parametrize(
    "comm", ["python3", "vllm serve", "a) (b"], ids=["plain", "space", "parens"]
)
def test_parse_stat_start_agrees_with_parse_stat(comm: str) -> None:
    line = stat_line(FakeProc(pid=9, comm=comm, starttime=123_456))
    assert parse_stat_start(line) == (comm, 123_456)
    full = parse_stat(line)
    assert parse_stat_start(line) == (full.comm, full.starttime_ticks)


@pytest.mark.parametrize("text", ["", "9 (x) S 1 2", "9 x S"], ids=["empty", "short", "no comm"])
def test_parse_stat_start_rejects(text: str) -> None:
    with pytest.raises(ParseError):
        parse_stat_start(text)


@pytest.mark.parametrize(
    "text",
    ["", "415 python3 S 1", "415 (python3) S 1 2 3", "x (python3) S " + "1 " * 50],
    ids=["empty", "no parens", "truncated", "non-numeric pid"],
)
def test_parse_stat_rejects_malformed(text: str) -> None:
    with pytest.raises(ParseError, match="/proc/415/stat"):
        parse_stat(text, "/proc/415/stat")


def test_parse_status() -> None:
    st = parse_status(
        status_text(FakeProc(pid=7, rss_kb=2048, threads=3, voluntary=11, involuntary=4))
    )
    assert (st.rss_bytes, st.threads) == (2048 * 1024, 3)
    assert (st.voluntary_ctxt_switches, st.nonvoluntary_ctxt_switches) == (11, 4)


def test_parse_status_of_kernel_thread_has_no_rss() -> None:
    st = parse_status("Name:\tkthreadd\nThreads:\t1\nvoluntary_ctxt_switches:\t5\n")
    assert st.rss_bytes is None
    assert st.threads == 1


def test_parse_status_bad_number() -> None:
    with pytest.raises(ParseError, match="VmRSS"):
        parse_status("VmRSS:\tlots kB\n", "status")


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"python3\0-m\0vllm\0", ("python3", "-m", "vllm")),
        (b"", ()),
        (b"nginx: worker process\0\0\0", ("nginx: worker process",)),
        (b"bad\xffbyte\0", ("bad\ufffdbyte",)),
    ],
    ids=["args", "kernel thread", "rewritten title", "invalid utf-8"],
)
def test_parse_cmdline(data: bytes, expected: tuple[str, ...]) -> None:
    assert parse_cmdline(data) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0::/system.slice/vllm.service\n", [CgroupLine(0, (), "/system.slice/vllm.service")]),
        (
            "0::/system.slice/vllm.service (deleted)\n",
            [CgroupLine(0, (), "/system.slice/vllm.service", deleted=True)],
        ),
        (
            "4:cpu,cpuacct:/a\n1:name=systemd:/b\n0::/c\n",
            [
                CgroupLine(4, ("cpu", "cpuacct"), "/a"),
                CgroupLine(1, ("name=systemd",), "/b"),
                CgroupLine(0, (), "/c"),
            ],
        ),
        (
            "13:memory:/system.slice/containerd.service/x.slice:cri-containerd:abc\n",
            [
                CgroupLine(
                    13, ("memory",), "/system.slice/containerd.service/x.slice:cri-containerd:abc"
                )
            ],
        ),
        ("\n0::/\n\n", [CgroupLine(0, (), "/")]),
    ],
    ids=["v2", "deleted cgroup", "hybrid", "path containing colons", "blank lines"],
)
def test_parse_cgroup_file(text: str, expected: list[CgroupLine]) -> None:
    assert list(parse_cgroup_file(text)) == expected


@pytest.mark.parametrize(
    "text",
    ["garbage", "x::/a", "0:cpu:relative"],
    ids=["no fields", "non-numeric id", "relative path"],
)
def test_parse_cgroup_file_rejects(text: str) -> None:
    with pytest.raises(ParseError):
        parse_cgroup_file(text)


def test_parse_boot_time() -> None:
    assert parse_boot_time("cpu 1 2\nbtime 1700000000\n") == 1_700_000_000.0
    with pytest.raises(ParseError, match="no btime"):
        parse_boot_time("cpu 1 2\n")


FIXTURES = Path(__file__).parent / "fixtures" / "proc"
TCP = (FIXTURES / "net_tcp.txt").read_text()
TCP6 = (FIXTURES / "net_tcp6.txt").read_text()


def test_parse_net_tcp() -> None:
    socks = parse_net_tcp(TCP)
    assert [(s.address, s.port, s.state, s.inode) for s in socks] == [
        ("0.0.0.0", 8000, "0A", 34567),
        ("127.0.0.1", 9091, "0A", 45678),
        ("10.0.1.5", 8000, "01", 56789),
    ]
    socks6 = parse_net_tcp(TCP6)
    assert [(s.address, s.port) for s in socks6] == [("::", 8080), ("127.0.0.1", 8081)]


def test_parse_net_tcp_rejects_bad_row() -> None:
    with pytest.raises(ParseError):
        parse_net_tcp("header\n 0: zz:yy\n")


@pytest.mark.parametrize(
    ("link", "inode"),
    [("socket:[123]", 123), ("pipe:[5]", None), ("/dev/null", None), ("socket:[x]", None)],
)
def test_parse_socket_inode(link: str, inode: int | None) -> None:
    assert parse_socket_inode(link) == inode


FIB = """Main:
  +-- 0.0.0.0/0 3 0 5
     |-- 0.0.0.0
        /0 universe UNICAST
     +-- 10.244.1.0/24 2 0 2
        |-- 10.244.1.0
           /24 link UNICAST
        |-- 10.244.1.7
           /32 host LOCAL
Local:
  +-- 127.0.0.0/8 2 0 2
     |-- 127.0.0.1
        /32 host LOCAL
"""


def test_parse_fib_trie_local() -> None:
    assert parse_fib_trie_local(FIB) == {"10.244.1.7", "127.0.0.1"}


def test_procfs_reads_a_tree(tmp_path: Path) -> None:
    root = write_proc(tmp_path / "proc", [FakeProc(pid=415, fds=4, sockets=(34567,))])
    fs = ProcFS(str(root))
    assert fs.pids() == [415]
    assert fs.read_comm(415) == "python3"
    assert fs.read_cmdline(415) == ("python3", "-m", "server")
    assert fs.count_open_fds(415) == 5
    assert fs.socket_inodes(415) == {34567}
    assert fs.boot_time() == BTIME
    with pytest.raises(FileNotFoundError):
        fs.read_stat(999)


def test_find_listening_pid_in_host_netns(tmp_path: Path) -> None:
    procs = [
        FakeProc(pid=100, starttime=50, sockets=(34567,)),  # the pre-forking parent
        FakeProc(pid=101, starttime=60, sockets=(34567,)),  # a worker sharing the socket
        FakeProc(pid=200, sockets=(11111,)),
    ]
    root = write_proc(tmp_path / "proc", procs, tcp=[("0A", 8000, 34567), ("01", 8000, 11111)])
    assert find_listening_pid(str(root), 8000) == 100
    assert find_listening_pid(str(root), 8000, "127.0.0.1") == 100
    assert find_listening_pid(str(root), 9999) is None
    assert find_listening_pid(str(tmp_path / "missing"), 8000) is None
    # a remote address never matches a local process listening on the same port
    assert find_listening_pid(str(root), 8000, "10.0.0.99") is None
    # one of the host's own addresses does
    (root / "net" / "fib_trie").write_text(FIB.replace("10.244.1.7", "10.0.0.99"))
    assert find_listening_pid(str(root), 8000, "10.0.0.99") == 100


def test_parse_if_inet6() -> None:
    text = (
        "00000000000000000000000000000001 01 80 10 80       lo\n"
        "fd000000000000000000000000000007 02 40 00 80     eth0\n"
        "fe80000000000000aabbccfffe001122 02 40 20 80     eth0\n"
    )
    assert parse_if_inet6(text) == {"::1", "fd00::7", "fe80::aabb:ccff:fe00:1122"}


def test_find_listening_pid_in_a_pod_netns(tmp_path: Path) -> None:
    pod_ns = "net:[4026532999]"
    procs = [
        FakeProc(pid=100),
        FakeProc(pid=300, netns=pod_ns, sockets=(77777,)),
        FakeProc(pid=301, netns=pod_ns, starttime=9_000),
    ]
    root = write_proc(tmp_path / "proc", procs)
    pod_net = root / "300" / "net"
    pod_net.mkdir()
    (pod_net / "tcp").write_text(TCP.replace("34567", "77777"))
    (pod_net / "fib_trie").write_text(FIB)
    assert find_listening_pid(str(root), 8000, "10.244.1.7") == 300
    assert find_listening_pid(str(root), 8000, "10.244.1.8") is None
