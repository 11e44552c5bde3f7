"""What clients may cost the real program (creepy 9pix as a subprocess): the connection cap.

The per-connection bounds themselves (replies nobody reads, frames before Tversion) are
proved against the service layer in test_server.py; here the program's flag is driven end to
end.  Run one: `pytest tests/test_limits.py -k cap`.
"""

import socket
import subprocess
import sys

import pytest

from creepy import errors as E
from creepy.ninep.codec import NOFID, NOTAG, Framer, Rattach, Rerror, Rversion, Tattach, \
    Tversion, decode, encode
from servers import Server9pix, creepy_env

DEADLINE = 20


def greet(s):
    """Tversion and Tattach on socket s; the decoded replies (or what came instead)."""
    s.sendall(encode(Tversion(NOTAG, 8192, "9P2000")) + encode(Tattach(1, 0, NOFID, "g", "")))
    return replies(s, 2)


def replies(s, n):
    framer = Framer(1 << 20)
    out = []
    while len(out) < n:
        data = s.recv(65536)
        if not data:
            break
        framer.feed(data)
        out.extend(decode(f) for f in framer.frames())
    return out


@pytest.fixture
def capped(tmp_path):
    srv = Server9pix(tmp_path, extra=["-n", "2"])
    srv.start()
    yield srv
    srv.close()


def test_connections_past_the_n_flag_are_refused_clearly_and_others_served(capped):
    a = socket.create_connection(capped.tcp, timeout=DEADLINE)
    b = socket.create_connection(capped.tcp, timeout=DEADLINE)
    assert [type(r) for r in greet(a)] == [Rversion, Rattach]
    assert [type(r) for r in greet(b)] == [Rversion, Rattach]
    c = socket.create_connection(capped.tcp, timeout=DEADLINE)
    got = replies(c, 2)
    assert got == [Rerror(NOTAG, E.ETOOMANYCONNS)]      # one error, then the server hangs up
    assert c.recv(1) == b""
    capped.said("refused: 2 connections already")
    a.close()
    # Once a connection ends, a new one is served.
    for _ in range(50):
        d = socket.create_connection(capped.tcp, timeout=DEADLINE)
        got = greet(d)
        d.close()
        if [type(r) for r in got] == [Rversion, Rattach]:
            break
    else:
        raise AssertionError(f"no connection served after one ended: {got}")
    b.close()
    capped.check_alive()


@pytest.mark.parametrize("value", ["0", "-3", "many"])
def test_a_bad_n_flag_is_one_line_and_status_2(tmp_path, value):
    r = subprocess.run([sys.executable, "-m", "creepy", "9pix", "-n", value,
                        str(tmp_path / "disk")], capture_output=True, text=True,
                       env=creepy_env(), timeout=DEADLINE)
    assert r.returncode == 2
    assert "positive" in r.stderr and "Traceback" not in r.stderr
