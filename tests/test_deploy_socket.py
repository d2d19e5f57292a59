"""The optional .socket unit: verified beside the service, and it matches the agent's flags."""

from __future__ import annotations

import configparser
import shutil

from tests.deployfiles import (
    UNIT,
    agent_help,
    assert_verifies_silently,
    unit_with_existing_binary,
    verify,
)

SOCKET = UNIT.with_suffix(".socket")


def _socket_beside_service(tmp_path, text: str | None = None):
    unit_with_existing_binary(tmp_path)  # the service, as installed, in tmp_path
    copy = tmp_path / SOCKET.name
    if text is None:
        shutil.copy(SOCKET, copy)
    else:
        copy.write_text(text)
    return copy


def test_socket_unit_verifies_silently_beside_the_service(tmp_path):
    assert_verifies_silently(_socket_beside_service(tmp_path))


def test_socket_unit_verify_can_fail(tmp_path):
    text = SOCKET.read_text().replace("ListenStream=9847", "ListenStrem=9847")
    proc = verify(_socket_beside_service(tmp_path, text))
    assert "ListenStrem" in proc.stderr


def test_socket_listens_on_the_default_port_and_the_flag_exists():
    parser = configparser.ConfigParser(strict=False)
    parser.read_string(SOCKET.read_text())
    assert parser["Socket"]["ListenStream"] == "9847"  # DESIGN: --web.listen-address :9847
    assert parser["Install"]["WantedBy"] == "sockets.target"
    assert "--web.systemd-socket" in agent_help()
    assert "--web.systemd-socket" in SOCKET.read_text()
