"""Boundaries of host/procfs.py that mutation testing found untested (issue 19).

Each ProcFS reader reports a malformed file by its full path (STYLE.md: ParseError(path,
detail)); the parse_* helpers name the file they parse when the caller does not; the
/proc/net/tcp reader filters on the state column (proc(5): `st`, the fourth column) and
reads tcp6 of the same namespace too.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from node_exporter_ml.host import ParseError
from node_exporter_ml.host.procfs import (
    ProcFS,
    parse_boot_time,
    parse_cgroup_file,
    parse_net_tcp,
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
