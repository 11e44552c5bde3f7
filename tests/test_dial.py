"""Addresses: parsing dial strings, the plan9port name space, loopback policy, dialling."""

import asyncio
import os
import pwd
import socket
import threading

import pytest

from creepy.ninep import dial
from creepy.ninep.dial import Address


@pytest.fixture
def ns(tmp_path, monkeypatch):
    d = tmp_path / "ns"
    monkeypatch.setenv("NAMESPACE", str(d))
    return d


@pytest.mark.parametrize("text, want", [
    ("tcp!example.org!564", Address("tcp", "example.org", 564)),
    ("tcp!example.org!9fs", Address("tcp", "example.org", 564)),
    ("tcp!example.org", Address("tcp", "example.org", 564)),
    ("net!10.0.0.1!5640", Address("tcp", "10.0.0.1", 5640)),
    ("tcp!*!9fs", Address("tcp", "*", 564)),
    ("tcp!::1!17", Address("tcp", "::1", 17)),
    ("tcp![::1]!17", Address("tcp", "::1", 17)),
    ("tcp!localhost!0", Address("tcp", "localhost", 0)),
    ("unix!/run/creepy.sock", Address("unix", path="/run/creepy.sock")),
    ("unix!rel/sock", Address("unix", path="rel/sock")),
    ("/tmp/x!y", Address("unix", path="/tmp/x!y")),
    ("./sock", Address("unix", path="./sock")),
    ("dir/sock", Address("unix", path="dir/sock")),
    ("127.0.0.1:5640", Address("tcp", "127.0.0.1", 5640)),
    ("host.example:9fs", Address("tcp", "host.example", 564)),
    ("*:564", Address("tcp", "*", 564)),
    ("[::1]:5640", Address("tcp", "::1", 5640)),
    ("[::1]", Address("tcp", "::1", 564)),
    ("::1", Address("tcp", "::1", 564)),
    ("fe80::1%eth0", Address("tcp", "fe80::1%eth0", 564)),
    ("564", Address("tcp", "127.0.0.1", 564)),
])
def test_parse_accepts_the_documented_forms(text, want):
    assert dial.parse(text) == want


def test_parse_uses_the_default_port():
    assert dial.parse("tcp!h", default_port=17) == Address("tcp", "h", 17)
    assert dial.parse("[::1]", default_port=17).port == 17


def test_a_bare_name_is_a_socket_in_the_name_space(ns):
    assert dial.parse("creepy") == Address("unix", path=str(ns / "creepy"))
    assert dial.parse("9fs") == Address("unix", path=str(ns / "9fs"))


@pytest.mark.parametrize("text, words", [
    ("", "empty"),
    (" tcp!h!1", "blanks"),
    ("tcp!h !1", "blanks"),
    ("tcp!h!1\n", "blanks"),
    ("udp!h!1", "network 'udp' not supported"),
    ("tcp!h!1!2", "want tcp!host!port"),
    ("tcp!!1", "empty host"),
    ("tcp!h!", "unknown port"),
    ("tcp!h!70000", "out of range"),
    ("tcp!h!nosuchservice-xyz", "unknown port"),
    ("tcp!h$x!1", "bad host name"),
    ("unix!", "needs a socket path"),
    (":564", "empty host"),
    ("h:", "unknown port"),
    ("[::1", "want [ipv6]:port"),
    ("[::1]:x:y", "unknown port"),
    ("[zz::q]:1", "not an IPv6 address"),
    ("a:b:c", "not an IPv6 address"),
    ("99999", "out of range"),
])
def test_parse_rejects_garbage_with_a_clear_message(text, words):
    with pytest.raises(ValueError) as e:
        dial.parse(text)
    assert words in str(e.value)


def test_dialstring_round_trips():
    for text in ("tcp!h!1", "tcp!*!564", "unix!/a/b", "tcp!::1!9"):
        assert dial.parse(text).dialstring() == text


def test_listen_and_dial_hosts_for_star():
    a = dial.parse("tcp!*!1")
    assert a.listen_host() is None and a.dial_host() == "localhost"
    b = dial.parse("tcp!127.0.0.1!1")
    assert b.listen_host() == b.dial_host() == "127.0.0.1"


@pytest.mark.parametrize("display, suffix", [
    (None, ":0"),
    ("", ":0"),
    (":0", ":0"),
    (":0.0", ":0"),
    (":1.1", ":1.1"),
    ("host:10.0", "host:10"),
    ("/tmp/launch-x/org.x:0", "_tmp_launch-x_org.x:0"),
    ("/tmp/launch/:0.0", "_tmp_launch_:0"),
])
def test_namespace_dir_follows_plan9port(monkeypatch, display, suffix):
    monkeypatch.delenv("NAMESPACE", raising=False)
    if display is None:
        monkeypatch.delenv("DISPLAY", raising=False)
    else:
        monkeypatch.setenv("DISPLAY", display)
    monkeypatch.setenv("USER", "someone-else")  # plan9port asks the password file, not $USER
    user = pwd.getpwuid(os.getuid()).pw_name
    assert dial.namespace_dir() == f"/tmp/ns.{user}.{suffix}"


def test_namespace_variable_wins(ns):
    assert dial.namespace_dir() == str(ns)
    assert dial.service_path("srv") == str(ns / "srv")


def test_ensure_namespace_dir_creates_it_private(ns):
    assert dial.ensure_namespace_dir() == str(ns)
    assert (os.stat(ns).st_mode & 0o777) == 0o700
    assert dial.ensure_namespace_dir() == str(ns)  # existing and fine


@pytest.mark.parametrize("mode", [0o770, 0o702, 0o777])
def test_ensure_namespace_dir_refuses_one_others_may_write(ns, mode):
    ns.mkdir()
    os.chmod(ns, mode)
    with pytest.raises(PermissionError, match="lets others write"):
        dial.ensure_namespace_dir()


def test_ensure_namespace_dir_accepts_readable_by_others(ns):
    ns.mkdir()
    os.chmod(ns, 0o755)
    assert dial.ensure_namespace_dir() == str(ns)


def test_ensure_namespace_dir_refuses_a_file(ns):
    ns.write_text("")
    with pytest.raises(PermissionError, match="not a directory"):
        dial.ensure_namespace_dir()


def test_ensure_namespace_dir_refuses_a_planted_link(tmp_path, monkeypatch):
    monkeypatch.delenv("NAMESPACE", raising=False)
    (tmp_path / "elsewhere").mkdir(mode=0o700)
    link = tmp_path / "ns.link"
    link.symlink_to(tmp_path / "elsewhere")
    monkeypatch.setattr(dial, "namespace_dir", lambda: str(link))
    with pytest.raises(PermissionError, match="not a directory"):
        dial.ensure_namespace_dir()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a directory away")
def test_ensure_namespace_dir_refuses_another_owner(ns):
    ns.mkdir(mode=0o700)
    os.chown(ns, 12345, -1)
    with pytest.raises(PermissionError, match="owned by uid 12345"):
        dial.ensure_namespace_dir()


@pytest.mark.parametrize("text, loop", [
    ("unix!/x", True),
    ("tcp!127.0.0.1!1", True),
    ("tcp!127.8.9.10!1", True),
    ("[::1]:1", True),
    ("tcp!::ffff:127.0.0.1!1", True),
    ("localhost:1", True),
    ("tcp!LocalHost.!1", True),
    ("564", True),
    ("tcp!*!1", False),
    ("0.0.0.0:1", False),
    ("[::]:1", False),
    ("tcp!10.0.0.1!1", False),
    ("tcp!::ffff:10.0.0.1!1", False),
    ("tcp!example.org!1", False),
    ("tcp!localhost.example.org!1", False),
])
def test_is_loopback(text, loop):
    assert dial.is_loopback(text) is loop
    assert dial.is_loopback(dial.parse(text)) is loop


def test_a_bare_service_name_is_loopback(ns):
    assert dial.is_loopback("creepy")


async def _echo(reader, writer):
    writer.write(await reader.readexactly(5))
    await writer.drain()
    writer.close()


def test_open_connection_over_tcp_and_unix(tmp_path):
    async def main():
        tcp = await asyncio.start_server(_echo, "127.0.0.1", 0)
        port = tcp.sockets[0].getsockname()[1]
        path = str(tmp_path / "s")
        unix = await asyncio.start_unix_server(_echo, path)
        async with tcp, unix:
            for addr in (f"tcp!127.0.0.1!{port}", f"127.0.0.1:{port}", f"tcp!*!{port}",
                         f"unix!{path}", dial.parse(path)):
                r, w = await dial.open_connection(addr)
                w.write(b"hello")
                assert await r.readexactly(5) == b"hello"
                w.close()
                await w.wait_closed()
    asyncio.run(main())


def _serve_once(listener):
    conn, _ = listener.accept()
    with conn:
        conn.sendall(conn.recv(5))


@pytest.mark.parametrize("family", ["tcp", "unix"])
def test_connect_socket_is_blocking_and_connected(tmp_path, family):
    if family == "tcp":
        listener = socket.create_server(("127.0.0.1", 0))
        addr = f"tcp!127.0.0.1!{listener.getsockname()[1]}"
    else:
        path = str(tmp_path / "s")
        listener = socket.socket(socket.AF_UNIX)
        listener.bind(path)
        listener.listen()
        addr = f"unix!{path}"
    with listener:
        t = threading.Thread(target=_serve_once, args=(listener,))
        t.start()
        with dial.connect_socket(addr, timeout=5) as s:
            s.sendall(b"howdy")
            assert s.recv(5) == b"howdy"
        t.join()


def test_connect_socket_to_nobody_fails_cleanly(tmp_path):
    with pytest.raises(OSError):
        dial.connect_socket(f"unix!{tmp_path}/nobody")


def test_create_connection_takes_a_protocol(tmp_path):
    class Catch(asyncio.Protocol):
        def __init__(self):
            self.got = asyncio.get_running_loop().create_future()

        def data_received(self, data):
            self.got.set_result(data)

    async def main():
        path = str(tmp_path / "s")
        async with await asyncio.start_unix_server(_echo, path):
            transport, proto = await dial.create_connection(f"unix!{path}", Catch)
            transport.write(b"proto")
            assert await proto.got == b"proto"
            transport.close()
    asyncio.run(main())
