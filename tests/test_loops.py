"""creepy 9pix on either event loop: uvloop's when it is installed, asyncio's own otherwise or
when CREEPY_LOOP=asyncio says so.  Every other test drives the program on the default loop;
these drive the same requests through both, the large-payload and pipelined paths included.
"""

import asyncio
import os
import socket
import subprocess
import sys

import pytest

from creepy.ninep.client import Client
from creepy.ninep.codec import (
    IOHDRSZ, NOFID, NOTAG, Framer, Rclunk, Rstat, Rwalk, Tattach, Tclunk, Tstat, Tversion,
    Twalk, decode, encode,
)
from creepy.ninep.dial import getuser
from servers import DEADLINE, LOOPS, Server9pix, creepy_env, format_disk

MIB = 1 << 20


@pytest.fixture(scope="module", params=LOOPS)
def srv(request, tmp_path_factory):
    s = Server9pix(tmp_path_factory.mktemp(f"loop-{request.param}"),
                   env={"CREEPY_LOOP": request.param})
    s.start()
    s.loop = request.param
    yield s
    s.close()


def test_the_server_says_which_event_loop_it_runs_on(srv):
    serving = [ln for ln in srv.stderr.splitlines() if " serving " in ln]
    assert serving and serving[-1].endswith(f", {srv.loop} event loop"), srv.stderr


@pytest.mark.parametrize("version", ["9P2000", "9P2000.L"])
def test_files_large_and_small_round_trip(srv, version):
    async def go():
        data = os.urandom(3 * MIB + 12345)
        async with await Client.connect(srv.tcp_dial, msize=MIB + IOHDRSZ,
                                        version=version) as c:
            d = f"d{version[-1]}"
            await c.mkdir(d)
            await c.write_file(f"{d}/big", data)
            assert await c.read_file(f"{d}/big") == data
            names = [f"f{i}" for i in range(200)]
            await asyncio.gather(*(c.write_file(f"{d}/{n}", n.encode() * 100) for n in names))
            got = {st.name for st in await c.listdir(d)}
            assert got == set(names) | {"big"}
            for n in names[::7]:
                assert await c.read_file(f"{d}/{n}") == n.encode() * 100
            await asyncio.gather(*(c.remove_path(f"{d}/{n}") for n in names))
            assert {st.name for st in await c.listdir(d)} == {"big"}
    asyncio.run(go())


def test_a_burst_of_pipelined_requests_is_answered_in_full(srv):
    """Many requests in one write, as bench.py's lanes send them: every one answered, each
    by its tag, whatever the loop makes of the reads and writes."""
    s = socket.create_connection(srv.tcp, timeout=DEADLINE)
    with s:
        f = Framer(8192 + IOHDRSZ)

        def replies(n):
            got = []
            while len(got) < n:
                data = s.recv(1 << 16)
                assert data, "server hung up"
                f.feed(data)
                got.extend(decode(x) for x in f.frames())
            return got

        s.sendall(encode(Tversion(NOTAG, 8192 + IOHDRSZ, "9P2000"))
                  + encode(Tattach(1, 0, NOFID, getuser(), "")))
        replies(2)
        lanes = 64
        burst = b"".join(encode(Twalk(t, 0, 100 + t, [])) + encode(Tstat(t + lanes, 100 + t))
                         + encode(Tclunk(t + 2 * lanes, 100 + t)) for t in range(lanes))
        for _ in range(20):
            s.sendall(burst)
            got = replies(3 * lanes)
            by = {r.tag: r for r in got}
            assert len(by) == 3 * lanes
            for t in range(lanes):
                assert isinstance(by[t], Rwalk), by[t]
                assert isinstance(by[t + lanes], Rstat), by[t + lanes]
                assert isinstance(by[t + 2 * lanes], Rclunk), by[t + 2 * lanes]


def test_an_unknown_event_loop_is_one_line_and_status_2(tmp_path):
    format_disk(tmp_path / "disk", size="8M", bsize="4K")
    env = {**creepy_env(), "CREEPY_LOOP": "trio"}
    r = subprocess.run([sys.executable, "-m", "creepy", "9pix", "-a", "-A",
                        "tcp!127.0.0.1!0", "-S", str(tmp_path / "sock"), str(tmp_path / "disk")],
                       capture_output=True, text=True, env=env, timeout=DEADLINE)
    lines = r.stderr.splitlines()
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert "CREEPY_LOOP=trio" in lines[0] and "Traceback" not in r.stderr


def test_the_default_is_uvloop_when_installed_and_asyncio_when_asked():
    from creepy import ninepix
    assert ninepix.loop_factory("asyncio") is None
    if "uvloop" in LOOPS:
        import uvloop
        assert ninepix.loop_factory("") is uvloop.new_event_loop
        assert ninepix.loop_factory("uvloop") is uvloop.new_event_loop
    else:
        assert ninepix.loop_factory("") is None
        with pytest.raises(ninepix.UsageError):
            ninepix.loop_factory("uvloop")
