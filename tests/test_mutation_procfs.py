"""Boundaries of host/procfs.py that mutation testing found untested (issue 19).

Each ProcFS reader reports a malformed file by its full path (STYLE.md: ParseError(path,
detail)); the parse_* helpers name the file they parse when the caller does not; the
/proc/net/tcp reader filters on the state column (proc(5): `st`, the fourth column) and
reads tcp6 of the same namespace too.
"""

from __future__ import annotations

import mmap
import os
from pathlib import Path

import pytest

from node_exporter_ml.host import ParseError
from node_exporter_ml.host.procfs import (
    ProcFS,
    parse_boot_time,
    parse_cgroup_file,
    parse_cmdline,
    parse_fib_trie_local,
    parse_if_inet6,
    parse_loadavg,
    parse_net_tcp,
    parse_socket_inode,
    parse_stat,
    parse_stat_start,
    parse_status,
)
from tools.host_trees import FakeProc, write_proc

LISTEN = "0A"
ESTABLISHED = "01"
HEADER = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid\n"


def _row(port: int, state: str, inode: int, address: str = "0100007F") -> str:
    # one kernel row: sl, local, remote, st, queues, tr/tm, retrnsmt, uid, timeout, inode
    return (
        f"   0: {address}:{port:04X} 00000000:0000 {state} 00000000:00000000 00:00000000"
        f" 00000000     0        0 {inode} 1 0000000000000000 100 0 0 10 0\n"
    )


def test_listen_filter_skips_other_states_and_short_rows() -> None:
    text = HEADER + _row(8000, LISTEN, 11) + "\n   1: x\n" + _row(8001, ESTABLISHED, 12)
    text += _row(8002, LISTEN, 13)
    got = parse_net_tcp(text, state=LISTEN)
    # 127.0.0.1 in host byte order is 0100007F; ports are hex; both LISTEN rows, in order,
    # past the blank line, the three-column row and the connection
    assert [(s.address, s.port, s.inode) for s in got] == [
        ("127.0.0.1", 8000, 11),
        ("127.0.0.1", 8002, 13),
    ]


def test_row_with_exactly_four_columns_is_judged_by_its_state() -> None:
    # four columns: a state to compare; not LISTEN, so passed over without decoding
    assert parse_net_tcp(HEADER + "   0: 0100007F:1F40 00000000:0000 01\n", state=LISTEN) == []
    # in the wanted state but short of the inode column: malformed, and said so
    with pytest.raises(ParseError, match="bad socket row"):
        parse_net_tcp(HEADER + "   0: 0100007F:1F40 00000000:0000 0A\n", state=LISTEN)


def test_without_a_state_filter_every_row_is_decoded() -> None:
    got = parse_net_tcp(HEADER + _row(80, ESTABLISHED, 5) + _row(81, LISTEN, 6))
    assert [(s.port, s.state) for s in got] == [(80, ESTABLISHED), (81, LISTEN)]


@pytest.mark.parametrize(
    ("parse", "default_path", "detail"),
    [
        (lambda: parse_stat("1 (x) S"), "stat", "expected at least 24 numeric fields"),
        (lambda: parse_stat("no comm"), "stat", "expected 'pid (comm) state ...'"),
        (
            lambda: parse_stat_start("1 (x) S 1"),
            "stat",
            "expected 'pid (comm) state ... starttime'",
        ),
        (
            lambda: parse_status("Threads:\tmany\n"),
            "status",
            "Threads: expected a number, got 'many'",
        ),
        (
            lambda: parse_cgroup_file("0::relative\n"),
            "cgroup",
            "expected 'ID:controllers:/path', got '0::relative'",
        ),
        (lambda: parse_boot_time("cpu 1\n"), "stat", "no btime line"),
        (lambda: parse_boot_time("btime soon\n"), "stat", "bad btime line 'btime soon'"),
        (lambda: parse_net_tcp(HEADER + "   0: zz\n"), "net/tcp", "bad socket row '0: zz'"),
    ],
    ids=[
        "stat short",
        "stat no comm",
        "stat start",
        "status",
        "cgroup",
        "no btime",
        "bad btime",
        "tcp",
    ],
)
def test_parse_error_names_the_file(parse, default_path: str, detail: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ParseError) as caught:
        parse()
    assert caught.value.path == default_path
    assert caught.value.detail.startswith(detail)


@pytest.mark.parametrize(
    ("name", "text", "read"),
    [
        ("stat", "1 (x) S\n", lambda fs: fs.read_stat(7)),
        ("stat", "1 (x) S\n", lambda fs: fs.read_start(7)),
        ("status", "VmRSS:\tlots kB\n", lambda fs: fs.read_status(7)),
        ("cgroup", "garbage\n", lambda fs: fs.read_cgroup(7)),
        ("net/tcp", HEADER + "   0: zz\n", lambda fs: fs.net_tcp(7)),
        ("net/tcp6", HEADER + "   0: zz\n", lambda fs: fs.net_tcp(7)),
    ],
    ids=["stat", "start", "status", "cgroup", "tcp", "tcp6"],
)
def test_reader_names_the_pid_file(tmp_path: Path, name: str, text: str, read) -> None:  # type: ignore[no-untyped-def]
    write_proc(tmp_path, [FakeProc(pid=7)])
    (tmp_path / "7" / name).write_text(text)
    with pytest.raises(ParseError) as caught:
        read(ProcFS(str(tmp_path)))
    assert caught.value.path == f"{tmp_path}/7/{name}"


def test_boot_time_error_names_proc_stat(tmp_path: Path) -> None:
    write_proc(tmp_path, [])
    (tmp_path / "stat").write_text("cpu 1\n")
    with pytest.raises(ParseError) as caught:
        ProcFS(str(tmp_path)).boot_time()
    assert caught.value.path == f"{tmp_path}/stat"


def test_net_tcp_reads_tcp6_with_the_same_state_filter(tmp_path: Path) -> None:
    write_proc(tmp_path, [FakeProc(pid=7)], tcp=[(LISTEN, 8000, 11)])
    v6 = "00000000000000000000000001000000"  # ::1 in host-order words
    (tmp_path / "net" / "tcp6").write_text(
        HEADER + _row(8080, LISTEN, 21, v6) + _row(8081, ESTABLISHED, 22, v6)
    )
    got = ProcFS(str(tmp_path)).net_tcp(7, state=LISTEN)
    assert [(s.address, s.port) for s in got] == [("0.0.0.0", 8000), ("::1", 8080)]
    (tmp_path / "net" / "tcp6").unlink()  # IPv6 disabled: tcp alone
    assert [s.port for s in ProcFS(str(tmp_path)).net_tcp(7)] == [8000]


# --- second pass (issue 19): the readers' decoding, bounds and fd/netns walks ---------------


def test_stat_start_needs_the_parentheses_even_with_enough_fields() -> None:
    # 22 space-separated fields and no "(comm)": not a stat line, whatever follows
    text = "1 comm " + " ".join(["S", *map(str, range(2, 30))])
    with pytest.raises(ParseError) as caught:
        parse_stat_start(text)
    assert caught.value.detail == "expected 'pid (comm) state ... starttime' (no (comm))"


def test_a_used_status_field_whose_value_holds_a_colon_is_malformed() -> None:
    # "Threads: 3:4" is Threads with a bad value, not a key "Threads: 3" to pass over
    with pytest.raises(ParseError, match="Threads: expected a number, got '3:4'"):
        parse_status("Threads:\t3:4\n")


def test_cmdline_strips_only_trailing_nuls() -> None:
    assert parse_cmdline(b"run\0MAX\0\0") == ("run", "MAX")


@pytest.mark.parametrize(
    "link",
    ["net:[4026531840]", "socket:[123", "anon_inode:[eventpoll]", "socket:[]"],
    ids=["namespace", "no closing bracket", "anon inode", "empty"],
)
def test_only_socket_links_give_an_inode(link: str) -> None:
    assert parse_socket_inode(link) is None


def test_fib_trie_local_line_before_any_leaf_names_nothing() -> None:
    assert parse_fib_trie_local("Local:\n        /32 host LOCAL\n") == set()


def test_if_inet6_passes_over_blank_and_bad_lines() -> None:
    text = (
        "\n"
        + "zz" * 16
        + " 01 80 10 80       lo\n"
        + "00000000000000000000000000000001 01 80 10 80       lo\n"
    )
    assert parse_if_inet6(text) == {"::1"}


def test_default_root_is_the_hosts_proc_and_the_units_are_the_kernels() -> None:
    fs = ProcFS()
    assert os.getpid() in fs.pids()
    # USER_HZ is 100 on every Linux architecture (proc(5), times(2)); the page size is the
    # one mmap reports
    assert fs.clock_ticks == 100
    assert fs.page_size == mmap.PAGESIZE


def test_invalid_utf8_in_proc_files_reads_as_replacement_characters(tmp_path: Path) -> None:
    write_proc(tmp_path, [FakeProc(pid=7, comm="w", starttime=4321)])
    stat = tmp_path / "7" / "stat"
    stat.write_bytes(stat.read_bytes().replace(b"(w)", b"(w\xff)"))
    (tmp_path / "7" / "comm").write_bytes(b"w\xff\n")
    fs = ProcFS(str(tmp_path))
    assert fs.read_comm(7) == "w\ufffd"
    assert fs.read_start(7) == ("w\ufffd", 4321)
    assert fs.read_stat(7).comm == "w\ufffd"


@pytest.mark.parametrize("comm", ["MAX X ", "MAX", "a\tb\t"])
def test_comm_keeps_trailing_spaces_and_letters(tmp_path: Path, comm: str) -> None:
    # comm is up to 15 bytes of anything; only the newline the kernel adds goes
    write_proc(tmp_path, [FakeProc(pid=7, comm=comm)])
    assert ProcFS(str(tmp_path)).read_comm(7) == comm


def test_socket_inodes_pass_over_fds_that_are_not_links(tmp_path: Path) -> None:
    write_proc(tmp_path, [FakeProc(pid=7, fds=0, sockets=tuple(range(100, 110)))])
    for i in range(10):  # interleaved names: some are listed before sockets
        (tmp_path / "7" / "fd" / f"{i}x").write_text("")
    assert ProcFS(str(tmp_path)).socket_inodes(7) == set(range(100, 110))


def test_net_tcp_of_a_pod_reads_its_own_namespace_tables(tmp_path: Path) -> None:
    write_proc(tmp_path, [FakeProc(pid=7, netns="net:[4026532999]")], tcp=[(LISTEN, 9000, 31)])
    (tmp_path / "net" / "tcp6").write_text(HEADER + _row(9001, LISTEN, 32, "0" * 32))
    (tmp_path / "7" / "net").mkdir()
    (tmp_path / "7" / "net" / "tcp").write_text(
        HEADER + _row(8000, LISTEN, 11) + _row(8001, ESTABLISHED, 12)
    )
    (tmp_path / "7" / "net" / "tcp6").write_text(HEADER + _row(8080, LISTEN, 21, "0" * 32))
    fs = ProcFS(str(tmp_path))
    assert [s.port for s in fs.net_tcp(7, LISTEN)] == [8000, 8080]
    assert [s.port for s in fs.net_tcp(7)] == [8000, 8001, 8080]
    assert fs.net_namespace(7) == "net:[4026532999]"


@pytest.mark.parametrize(
    ("size", "limit"),
    [
        (300_000, 1000),
        (300_000, 65_537),  # one byte past the first chunk
        (300_000, 70_000),
        (300_000, 200_000),
        (500, 1000),
        (500, 500),
    ],
)
def test_read_environ_reads_up_to_its_limit(tmp_path: Path, size: int, limit: int) -> None:
    data = bytes(i % 251 for i in range(size))
    write_proc(tmp_path, [FakeProc(pid=7, environ=data)])
    assert ProcFS(str(tmp_path)).read_environ(7, limit) == data[:limit]


def test_other_reads_are_whole_past_the_chunk_size(tmp_path: Path) -> None:
    args = tuple(f"--arg{i}=" + "v" * 100 for i in range(1000))  # about 110 kB of cmdline
    write_proc(tmp_path, [FakeProc(pid=7, cmdline=args)])
    assert ProcFS(str(tmp_path)).read_cmdline(7) == args


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0.52 0.58 0.59 2/1184 9127\n", (0.52, 0.58, 0.59)),
        ("0.00 0.00 0.00 1/1 1\n", (0.0, 0.0, 0.0)),
        ("12.5 3 1e2", (12.5, 3.0, 100.0)),
    ],
)
def test_parse_loadavg(text: str, expected: tuple[float, float, float]) -> None:
    assert parse_loadavg(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "0.5 0.5",
        "x 0.5 0.5 1/1 1",
        "-0.1 0.5 0.5",
        "0.5 inf 0.5",
        "0.5 0.5 nan",
        "x" * 70,  # shown cut to 60 characters
        "-1 0 0 " + "9" * 70,
    ],
    ids=["empty", "two fields", "word", "negative", "inf", "nan", "long word", "long negative"],
)
def test_parse_loadavg_rejects(text: str) -> None:
    with pytest.raises(ParseError) as caught:
        parse_loadavg(text)
    assert caught.value.path == "loadavg"
    assert caught.value.detail == f"expected three load averages, got {text[:60]!r}"
    with pytest.raises(ParseError) as caught:
        parse_loadavg(text, "/host/proc/loadavg")
    assert caught.value.path == "/host/proc/loadavg"


def test_local_addresses_join_both_tables_and_skip_a_missing_one(tmp_path: Path) -> None:
    write_proc(tmp_path, [FakeProc(pid=7, netns="net:[4026532999]")])
    net = tmp_path / "7" / "net"
    net.mkdir()
    (net / "fib_trie").write_text("Local:\n  +-- 10.0.0.0/8 2 0 2\n     |-- 10.1.2.3\n"
                                  "        /32 host LOCAL\n")  # fmt: skip
    (net / "if_inet6").write_text("fd000000000000000000000000000007 02 40 00 80     eth0\n")
    fs = ProcFS(str(tmp_path))
    assert fs.local_addresses(7) == {"10.1.2.3", "fd00::7"}
    (net / "fib_trie").unlink()  # no IPv4 routing table: the IPv6 addresses still count
    assert fs.local_addresses(7) == {"fd00::7"}
    (net / "if_inet6").unlink()
    assert fs.local_addresses(7) == set()
