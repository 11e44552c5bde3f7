"""fsx through the real server (see fsx.py): one file written, read, truncated and extended over
9P (Twrite, Tread, Twstat length, Topen with OTRUNC), compared with a model after every read,
across syncs (the no-change Twstat), the sweeps a small disk forces, and restarts (SIGKILL just
after a sync: what was committed must read back whole).

The tiny profile (1 KiB blocks on a 3 MiB disk, so the log goes round all the time) and the
default one (16 KiB blocks) each run 100,000 operations in CI.  The long mode is for bench/:
    FSX_OPS=1000000 python -m pytest tests/test_fsx_server.py
Reproduce a failure with the seed it prints: FSX_SEED=<seed> FSX_OPS=<n>.
"""

import os
import re
import socket

import pytest

from creepy.ninep import codec
from creepy.ninep.client import Error9P, nochange
from creepy.ninep.codec import ORDWR, OTRUNC
from creepy.ninep.dial import getuser
from fsx import Fsx
from servers import Server9pix

OPS = int(os.environ.get("FSX_OPS", "100000"))
# Writes of up to 8 blocks of the default profile (130,816 bytes): frames of 64 KiB or more
# are received into buffers of their own whose whole blocks the store keeps.
MSIZE = (1 << 17) + 24


class Wire:
    """A minimal blocking 9P client on one socket: one request at a time, which is all fsx
    needs, at a fraction of the cost of an event loop per operation."""

    def __init__(self, srv, aname, msize=65536 + 24):
        self.s = srv.connect_socket("tcp")
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.fr = codec.Framer(msize)
        self.rpc(codec.Tversion(codec.NOTAG, msize, "9P2000"))
        self.rpc(codec.Tattach(1, 0, codec.NOFID, getuser(), aname))
        self.next = 2

    def rpc(self, msg):
        self.s.sendall(codec.encode(msg))
        while True:
            for frame in self.fr.frames():
                r = codec.decode(frame)
                if r.__class__ is codec.Rerror:
                    raise Error9P(r.ename)
                return r
            buf = self.fr.get_buffer(1 << 16)
            n = self.s.recv_into(buf)
            if not n:
                raise ConnectionError("the server hung up")
            self.fr.buffer_updated(n)

    def fid(self):
        self.next += 1
        return self.next

    def close(self):
        self.s.close()


class ServerFile:
    """The fsx target: /f on a real 9pix (fid 2, open ORDWR)."""

    def __init__(self, srv):
        self.srv = srv
        self.w = None
        self.restarts = 0
        self.sweeps = 0                 # counted over every run of the server
        self.connect(create=True)

    def connect(self, create=False):
        w = self.w = Wire(self.srv, "", msize=MSIZE)
        w.rpc(codec.Twalk(0, 0, 2, ()))
        if create:
            w.rpc(codec.Tcreate(0, 2, "f", 0o644, ORDWR))
        else:
            w.rpc(codec.Twalk(0, 2, 2, ("f",)))
            w.rpc(codec.Topen(0, 2, ORDWR))

    def read(self, off, count):
        out = bytearray()
        while count > 0:
            b = self.w.rpc(codec.Tread(0, 2, off, min(count, 65536))).data
            if not b:
                break
            out += b
            off += len(b)
            count -= len(b)
        return bytes(out)

    def write(self, off, data):
        assert self.w.rpc(codec.Twrite(0, 2, off, data)).count == len(data)

    def truncate(self, length):
        if length == 0 and os.urandom(1)[0] & 1:   # Topen with OTRUNC, the other way to empty
            f = self.w.fid()
            self.w.rpc(codec.Twalk(0, 0, f, ("f",)))
            self.w.rpc(codec.Topen(0, f, ORDWR | OTRUNC))
            self.w.rpc(codec.Tclunk(0, f))
        else:
            st = nochange()
            st.length = length
            self.w.rpc(codec.Twstat(0, 2, st))

    def length(self):
        return self.w.rpc(codec.Tstat(0, 2)).stat.length

    def sync(self):
        self.w.rpc(codec.Twstat(0, 2, nochange()))

    def server_stats(self):
        """(sweeps, corrupt blocks) of the running server, from /stats."""
        w = Wire(self.srv, "main")
        try:
            w.rpc(codec.Twalk(0, 0, 2, ("stats",)))
            w.rpc(codec.Topen(0, 2, codec.OREAD))
            text = w.rpc(codec.Tread(0, 2, 0, 60000)).data.decode()
        finally:
            w.close()
        return (int(re.search(r"^sweeps:\t(\d+)", text, re.M).group(1)),
                int(re.search(r" (\d+) corrupt", text).group(1)))

    def reopen(self):
        """Commit, kill the server without letting it sync, start it again."""
        self.sync()
        sweeps, corrupt = self.server_stats()
        assert corrupt == 0
        self.sweeps += sweeps
        self.w.close()
        self.srv.kill()
        self.srv.start()
        self.restarts += 1
        self.connect()

    def close(self):
        self.w.close()


def run_fsx(tmp_path, seed, size, bsize, cap, max_len, ops, extra=()):
    srv = Server9pix(tmp_path, size=size, bsize=bsize, extra=list(extra))
    srv.start()
    f = None
    try:
        f = ServerFile(srv)
        seed = int(os.environ.get("FSX_SEED", seed))
        fsx = Fsx(seed, f, cap, max_len=max_len, sync_every=500,
                  reopen_every=max(ops // 4, 1000), max_io=8 * cap, length_every=7)
        fsx.run(ops)
        sweeps, corrupt = f.server_stats()
        sweeps += f.sweeps
        restarts = f.restarts
    finally:
        if f is not None:
            f.close()
        srv.close()
    from creepy.check import check_disk
    rep = check_disk(srv.disk)
    assert rep.errors == [], rep.errors[:3]
    assert corrupt == 0
    return sweeps, restarts


@pytest.mark.parametrize("seed", [7])
def test_fsx_through_the_server_tiny_profile(tmp_path, seed):
    sweeps, restarts = run_fsx(tmp_path, seed, "2M", "1K", 992, 300_000, OPS,
                               extra=["-c", "1"])
    print(f"{OPS} operations, {sweeps} sweeps, {restarts} restarts")
    assert sweeps >= 3 and restarts >= 3, (sweeps, restarts)


@pytest.mark.parametrize("seed", [8])
def test_fsx_through_the_server_default_profile(tmp_path, seed):
    sweeps, restarts = run_fsx(tmp_path, seed, "256M", "16K", 16352, 4_000_000, OPS)
    print(f"{OPS} operations, {sweeps} sweeps, {restarts} restarts")
    assert restarts >= 3
