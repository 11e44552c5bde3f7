"""What clients may cost the real program (creepy 9pix as a subprocess): the connection cap,
and the limit on open files it needs.

The per-connection bounds themselves (replies nobody reads, frames before Tversion) are
proved against the service layer in test_server.py; here the program's flag is driven end to
end.  Run one: `pytest tests/test_limits.py -k cap`.
"""

import contextlib
import os
import resource
import socket
import subprocess
import sys

import pytest

from creepy import errors as E
from creepy.ninep.codec import NOFID, NOTAG, Framer, Rattach, Rerror, Rversion, Tattach, \
    Tversion, decode, encode
from creepy.ninepix import FD_RESERVE
from servers import LOOPS, Server9pix, creepy_env

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


@contextlib.contextmanager
def serving(srv):
    """srv started, and a list for the test's sockets; at the end the server must still run
    and have logged no traceback, and the sockets and the server are closed however the test
    ended."""
    socks = []
    srv.start()
    try:
        yield socks
        srv.check_alive()
        assert "Traceback" not in srv.stderr
    finally:
        for s in socks:
            s.close()
        srv.close()


def open_files(pid):
    """(soft, hard) limits on open files of process pid, as the kernel has them."""
    with open(f"/proc/{pid}/limits") as fp:
        for line in fp:
            if line.startswith("Max open files"):
                soft, hard = line.split()[3:5]
                return (resource.RLIM_INFINITY if soft == "unlimited" else int(soft),
                        resource.RLIM_INFINITY if hard == "unlimited" else int(hard))
    raise AssertionError("no 'Max open files' line")


def test_the_soft_limit_on_open_files_is_raised_to_fit_the_n_flag(tmp_path):
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 2000 + FD_RESERVE
    if hard != resource.RLIM_INFINITY and hard < want:
        pytest.skip(f"the hard limit on open files here ({hard}) is below {want}")
    srv = Server9pix(tmp_path, extra=["-n", "2000"], nofile=(100, hard))
    with serving(srv):
        assert open_files(srv.proc.pid) == (want, hard)
        assert "WARNING" not in srv.stderr


def test_a_hard_limit_below_the_n_flag_serves_fewer_and_refuses_the_rest_clearly(tmp_path):
    limit = FD_RESERVE + 20
    srv = Server9pix(tmp_path, extra=["-n", "2000"], nofile=(limit, limit))
    with serving(srv) as socks:
        srv.said(f"WARNING: the limit on open files ({limit}) leaves room for 20 connections, "
                 f"not 2000; more are refused")
        for _ in range(20):
            s = socket.create_connection(srv.tcp, timeout=DEADLINE)
            socks.append(s)
            assert [type(r) for r in greet(s)] == [Rversion, Rattach]
        s = socket.create_connection(srv.tcp, timeout=DEADLINE)
        socks.append(s)
        assert replies(s, 2) == [Rerror(NOTAG, E.ETOOMANYCONNS)]


@pytest.mark.parametrize("loop", LOOPS)
def test_descriptors_running_out_at_accept_never_hang_a_client_and_the_server_recovers(
        tmp_path, loop):
    # However the limit is set, descriptors can run out (another program's, ENFILE).  On
    # asyncio's loop accept fails with EMFILE and retries by itself a second later: the
    # clients wait, the log says so in one line (not a traceback for each try), and they are
    # served once descriptors are free.  On uvloop, libuv accepts the waiting connections and
    # closes them at once (its "EMFILE trick", without telling the loop): each client sees
    # its connection end, none hangs.  On both the server serves new clients afterwards.
    srv = Server9pix(tmp_path, env={"CREEPY_LOOP": loop})
    with serving(srv) as socks:
        pid = srv.proc.pid
        soft, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
        used = len(os.listdir(f"/proc/{pid}/fd"))
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (used + 1, hard))
        for _ in range(10):
            socks.append(socket.create_connection(srv.tcp, timeout=DEADLINE))
        if loop == "asyncio":
            srv.said("socket.accept() out of system resource: Too many open files")
        else:
            for s in socks:     # served (a descriptor was free) or closed: never a timeout
                assert [type(r) for r in greet(s)] in ([Rversion, Rattach], [])
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (soft, hard))
        if loop == "uvloop":        # those were served or closed: new clients now
            socks.extend(socket.create_connection(srv.tcp, timeout=DEADLINE)
                         for _ in range(10))
        for s in socks[-10:]:
            assert [type(r) for r in greet(s)] == [Rversion, Rattach]


_HEAP_CHILD = r"""
import sys
from creepy.ninepix import tune_malloc
def rss():
    with open('/proc/self/status') as f:
        return next(int(l.split()[1]) for l in f if l.startswith('VmRSS:')) >> 10
tune_malloc(int(sys.argv[1]) << 20)
frames = [bytearray(1 << 20) for _ in range(200)]       # 1 MiB Twrite frames, touched
held = rss()
del frames
print(held, rss())
"""


@pytest.mark.skipif(os.uname().sysname != "Linux" or
                    "glibc" not in " ".join(__import__("platform").libc_ver()),
                    reason="tune_malloc tunes glibc's malloc")
@pytest.mark.parametrize("c_mib", [64, 2048, 8192, 16384])
def test_freed_frames_stay_in_the_heap_whatever_the_c_flag(c_mib):
    # tune_malloc keeps freed memory for the next frames (ninepix.py): 200 MiB of 1 MiB
    # frames freed must not go back to the kernel, for any -c (mallopt takes a C int: a
    # budget of 8 GiB once wrapped to a threshold of 0, which gives every free back).
    out = subprocess.run([sys.executable, "-c", _HEAP_CHILD, str(c_mib)], capture_output=True,
                         text=True, check=True, cwd=os.path.dirname(os.path.dirname(
                             os.path.abspath(__file__)))).stdout
    held, after = map(int, out.split())
    assert held >= 200 and after >= held - 20, (held, after)
