"""Malformed 9P input against the real server (creepy 9pix as a subprocess).

Acceptance: truncated frames, oversize sizes, bad string lengths, unknown types, walks of 17
names, bad names (walk elements with '/' or NUL, create and rename names '.', '..', '/'),
duplicate tags and fids: each gets an Rerror on its tag or a closed connection; a healthy
connection opened before the attack still walks, stats and reads afterwards; and nothing on
disk changes (sha256 of the disk file before the attacks and after SIGTERM, which syncs).

Every case opens a fresh attack connection and builds its frames by hand (struct, or the codec
for the well-formed parts).  Run one case: `pytest tests/test_malformed.py -k walk_17`.
"""

import hashlib
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from creepy import errors as E
from creepy.ninep import codec
from creepy.ninep.client import SyncClient, nochange
from creepy.ninep.codec import (
    NOFID, NOTAG, OREAD, DMDIR, Framer, Qid, encode, pack_stat,
    Tversion, Rversion, Tattach, Rattach, Tauth, Rerror, Tflush, Rflush, Twalk, Rwalk,
    Topen, Ropen, Tcreate, Tread, Rread, Twrite, Tclunk, Rclunk, Tremove, Tstat, Rstat,
    Twstat,
)
from creepy.ninep.dial import getuser

TIMEOUT = 10
MSIZE = 8192
USER = getuser()
DATA = bytes(range(256)) * 20          # /root/keep/data: 5120 known bytes
PROBE = 0xFFFE                          # tag of the request that checks a connection still works
NAME_ERRORS = {"bad character in file name", "illegal file name", E.ENAMETOOLONG}


# -- the real server -------------------------------------------------------------------

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _env():
    """The subprocess runs this checkout's creepy, whatever is installed."""
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RealServer:
    """creepy 9pix on a fresh disk, listening on loopback TCP and a Unix socket."""

    def __init__(self, workdir, size="64M"):
        self.disk = os.path.join(workdir, "main.disk")
        self.errlog = os.path.join(workdir, "9pix.log")
        # A short directory for the socket: sun_path holds 108 bytes at most.
        self.sockdir = tempfile.mkdtemp(prefix="cr")
        self.sock = os.path.join(self.sockdir, "9pix")
        subprocess.run([sys.executable, "-m", "creepy", "fmt", "-s", size, self.disk],
                       check=True, capture_output=True, env=_env())
        self.proc = None
        for _ in range(5):              # a free port can be taken before the server binds it
            self.port = _free_port()
            self.tcp = f"tcp!127.0.0.1!{self.port}"
            with open(self.errlog, "ab") as err:
                self.proc = subprocess.Popen(
                    [sys.executable, "-m", "creepy", "9pix", "-a", "-A", self.tcp, "-S",
                     self.sock, "-i", "3600", self.disk],
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                    env=_env())
            if self._wait_ready():
                return
            self.proc.kill()
            self.proc.wait()
        raise RuntimeError("9pix did not start:\n" + self.log_tail())

    def _wait_ready(self):
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                if os.path.exists(self.sock):
                    return True
            except OSError:
                pass
            time.sleep(0.02)
        return False

    def addr(self, transport="tcp"):
        return self.tcp if transport == "tcp" else f"unix!{self.sock}"

    def alive(self):
        return self.proc.poll() is None

    def log_tail(self, n=4000):
        try:
            with open(self.errlog, "rb") as f:
                return f.read()[-n:].decode("utf-8", "replace")
        except OSError:
            return ""

    def stop(self):
        """SIGTERM (the server syncs), wait; returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.sockdir, ignore_errors=True)
        return self.proc.returncode


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# -- raw frames ------------------------------------------------------------------------

def frame(mtype, tag, body=b""):
    return struct.pack("<IBH", 7 + len(body), mtype, tag) + body


def s(text):
    """A 9P string: len[2] then the bytes."""
    b = text.encode("utf-8") if isinstance(text, str) else text
    return struct.pack("<H", len(b)) + b


def walk_frame(tag, fid, newfid, names, nwname=None):
    body = struct.pack("<IIH", fid, newfid, len(names) if nwname is None else nwname)
    return frame(Twalk.type, tag, body + b"".join(s(n) for n in names))


def create_frame(tag, fid, name, perm=0o644, mode=OREAD):
    return frame(Tcreate.type, tag, struct.pack("<I", fid) + s(name) + struct.pack("<IB", perm,
                                                                                     mode))


def stat_entry(name="", mode=0xFFFFFFFF, length=0xFFFFFFFFFFFFFFFF, **kw):
    st = nochange()
    st.name, st.mode, st.length = name, mode, length
    for k, v in kw.items():
        setattr(st, k, v)
    return st


class Raw:
    """A blocking 9P connection that sends whatever bytes it is given."""

    def __init__(self, server, transport="tcp"):
        if transport == "tcp":
            self.sock = socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        else:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(TIMEOUT)
            self.sock.connect(server.sock)
        self.framer = Framer(1 << 24)
        self.frames = []
        self.eof = False

    def close(self):
        self.sock.close()

    def send(self, *frames):
        try:
            self.sock.sendall(b"".join(frames))
        except (BrokenPipeError, ConnectionResetError):
            self.eof = True         # the server hung up already: recv() reports it

    def recv(self):
        """The next reply, or None once the server has closed the connection."""
        while not self.frames:
            if self.eof:
                return None
            try:
                data = self.sock.recv(1 << 16)
            except ConnectionResetError:
                data = b""
            except socket.timeout:
                raise AssertionError(f"no reply and no close within {TIMEOUT} s") from None
            if not data:
                self.eof = True
                continue
            self.framer.feed(data)
            self.frames.extend(self.framer.frames())
        return codec.decode(self.frames.pop(0))

    def rpc(self, msg):
        self.send(encode(msg))
        r = self.recv()
        assert r is not None, f"connection closed on {msg!r}"
        assert r.tag == msg.tag, (msg, r)
        return r

    def version(self, msize=MSIZE):
        r = self.rpc(Tversion(NOTAG, msize, "9P2000"))
        assert isinstance(r, Rversion) and r.version == "9P2000", r
        return r

    def attach(self, fid=0, aname=""):
        r = self.rpc(Tattach(1, fid, NOFID, USER, aname))
        assert isinstance(r, Rattach), r
        return r

    def walk(self, fid, newfid, names):
        r = self.rpc(Twalk(2, fid, newfid, names))
        assert isinstance(r, Rwalk) and len(r.wqids) == len(names), r
        return r


def rejected(conn, tag, enames=None):
    """The next reply is Rerror on tag (its string in enames, if given) and the connection then
    still answers, in frame sync; or the server closed the connection.  'error' or 'closed'."""
    r = conn.recv()
    if r is None:
        return "closed"
    assert isinstance(r, Rerror) and r.tag == tag, f"expected Rerror on tag {tag}, got {r!r}"
    if os.environ.get("MALFORMED_VERBOSE"):
        print(f"  tag {tag}: {r.ename}")
    if enames is not None:
        assert r.ename in enames, r
    conn.send(encode(Tflush(PROBE, 0xFFFD)))
    p = conn.recv()
    assert p is not None, "connection closed after an Rerror"
    assert p.tag == PROBE and isinstance(p, (Rflush, Rerror)), p
    return "error"


def closed(conn):
    """The server closes the connection, answering nothing."""
    r = conn.recv()
    assert r is None, f"expected the connection to close, got {r!r}"


# -- the shared server and the healthy connection --------------------------------------

@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A server with /keep/data committed to disk before the disk's hash is taken."""
    srv = RealServer(str(tmp_path_factory.mktemp("malformed")))
    try:
        with SyncClient(srv.tcp, timeout=TIMEOUT) as c:
            c.mkdir("keep")
            c.write_file("keep/data", DATA)
            c.mkdir("keep/sub")
            c.sync_file("keep/data")          # a no-change wstat: commit to disk now
        srv.hash_before = sha256(srv.disk)
        yield srv
    finally:
        srv.stop()


class Healthy:
    """A connection opened before an attack: /keep/data walked and open for reading."""

    def __init__(self, server, transport):
        self.conn = Raw(server, transport)
        self.conn.version()
        self.conn.attach(0)
        self.conn.walk(0, 1, ["keep", "data"])
        r = self.conn.rpc(Topen(3, 1, OREAD))
        assert isinstance(r, Ropen), r

    def check(self):
        c = self.conn
        r = c.rpc(Twalk(10, 0, 20, ["keep", "data"]))
        assert isinstance(r, Rwalk) and len(r.wqids) == 2, r
        r = c.rpc(Tstat(11, 20))
        assert isinstance(r, Rstat), r
        assert (r.stat.name, r.stat.length) == ("data", len(DATA))
        r = c.rpc(Tclunk(12, 20))
        assert isinstance(r, Rclunk), r
        r = c.rpc(Tread(13, 1, 1000, 3000))
        assert isinstance(r, Rread) and r.data == DATA[1000:4000], r
        r = c.rpc(Twalk(14, 0, 21, ["keep", "..", "keep", "sub", ".."]))
        assert isinstance(r, Rwalk) and len(r.wqids) == 5 and r.wqids[4] == r.wqids[0], r
        assert isinstance(c.rpc(Tclunk(15, 21)), Rclunk)

    def close(self):
        self.conn.close()


# -- the cases: each gets a fresh connection, versioned (msize 8192) and attached as fid 0
# on the root unless it says otherwise --------------------------------------------------

CASES = {}


def case(setup="attach"):
    def register(fn):
        CASES[fn.__name__] = (fn, setup)
        return fn
    return register



# Truncated frames ----------------------------------------------------------------------

@case(setup="none")
def truncated_header_then_eof(c, h):
    c.send(b"\x20\x00\x00")
    c.sock.shutdown(socket.SHUT_WR)
    closed(c)


@case(setup="version")
def truncated_frame_then_eof(c, h):
    f = encode(Twalk(5, 0, 9, ["keep"]))
    c.send(f[:-3])
    c.sock.shutdown(socket.SHUT_WR)
    closed(c)


@case()
def truncated_frame_pending_while_others_are_served(c, h):
    # Half a Twalk arrives; until the rest does, the server waits and serves everyone else.
    f = encode(Twalk(5, 0, 9, ["keep", "data"]))
    c.send(f[:len(f) // 2])
    time.sleep(0.05)
    h.check()
    c.send(f[len(f) // 2:])
    r = c.recv()
    assert isinstance(r, Rwalk) and r.tag == 5 and len(r.wqids) == 2, r


@case()
def truncated_bodies(c, h):
    # Honest size fields around bodies too short for their message type.
    for mtype, body in [
        (Tversion.type, struct.pack("<I", MSIZE)),                  # no version string
        (Tversion.type, struct.pack("<I", MSIZE) + b"\x06"),        # half a length
        (Tauth.type, struct.pack("<I", 9)),                         # no uname, no aname
        (Tattach.type, struct.pack("<II", 9, NOFID) + s(USER)),     # no aname
        (Tflush.type, b"\x01"),
        (Twalk.type, struct.pack("<II", 0, 9)),                     # no nwname
        (Twalk.type, struct.pack("<IIH", 0, 9, 2) + s("keep")),     # one name of two
        (Topen.type, struct.pack("<I", 0)),                         # no mode
        (Tcreate.type, struct.pack("<I", 0) + s("new")),            # no perm, no mode
        (Tcreate.type, struct.pack("<I", 0) + s("new") + b"\xa4\x01\x00\x00"),  # no mode
        (Tread.type, struct.pack("<IQ", 0, 0)),                     # no count
        (Twrite.type, struct.pack("<IQI", 0, 0, 100) + b"x" * 10),  # count 100, 10 follow
        (Tclunk.type, b"\x00\x00"),
        (Tremove.type, b""),
        (Tstat.type, b"\x00"),
        (Twstat.type, struct.pack("<IH", 0, 60) + b"\x00" * 20),    # n 60, 20 follow
    ]:
        tag = 0x100 + mtype
        c.send(frame(mtype, tag, body))
        if rejected(c, tag) == "closed":
            return


@case()
def trailing_bytes(c, h):
    for f in [
        encode(Tclunk(7, 0)) + b"\x00",
        encode(Tstat(7, 0)) + b"junk",
        encode(Twalk(7, 0, 9, ["keep"])) + b"\x00\x00",
        encode(Tflush(7, 3)) + b"\x00",
        encode(Tattach(7, 9, NOFID, USER, "")) + b"\x00",
        encode(Tread(7, 0, 0, 10)) + b"\x01",
    ]:
        c.send(struct.pack("<I", len(f)) + f[4:])       # the size counts the extra bytes
        if rejected(c, 7) == "closed":
            return
    # None of them took effect: fid 0 is still there, fid 9 never was.
    assert isinstance(c.rpc(Tstat(8, 0)), Rstat)
    assert isinstance(c.rpc(Tclunk(8, 9)), Rerror)


@case()
def bad_frame_then_good_frame_in_one_write(c, h):
    c.send(frame(Twalk.type, 30, struct.pack("<IIH", 0, 9, 1) + b"\x09\x00ke"),
           encode(Tstat(31, 0)))
    r = c.recv()
    if r is None:
        return
    assert isinstance(r, Rerror) and r.tag == 30, r
    r = c.recv()
    assert isinstance(r, Rstat) and r.tag == 31, r


# Sizes -----------------------------------------------------------------------------------

def _size_case(name, size, setup, body=b""):
    def fn(c, h):
        c.send(struct.pack("<IBH", size, Tstat.type, 40) + body)
        closed(c)
    fn.__name__ = name
    case(setup)(fn)


_size_case("size_0", 0, "attach")
_size_case("size_4_less_than_a_header", 4, "attach")
_size_case("size_6_less_than_a_header", 6, "attach")
_size_case("size_msize_plus_1", MSIZE + 1, "attach", b"\x00" * 100)
_size_case("size_2_gib", 1 << 31, "attach", b"\x00" * 100)
_size_case("size_4_gib_minus_1", 0xFFFFFFFF, "attach")
_size_case("size_4_gib_minus_1_before_version", 0xFFFFFFFF, "none")
_size_case("size_16_mib_before_version", 16 << 20, "none", b"\x00" * 1000)


@case()
def size_exactly_msize_is_read_whole(c, h):
    # The largest frame allowed: read whole and refused on its merits (fid 99 is unknown).
    data = b"\xee" * (MSIZE - 23)
    c.send(encode(Twrite(41, 99, 0, data)))
    assert rejected(c, 41, {E.EUNKNOWNFID}) == "error"


@case()
def huge_counts_and_offsets(c, h):
    c.walk(0, 9, ["keep", "data"])
    assert isinstance(c.rpc(Topen(42, 9, OREAD)), Ropen)
    r = c.rpc(Tread(42, 9, 0, 0xFFFFFFFF))               # clamped to the iounit
    assert isinstance(r, Rread) and r.data == DATA[:MSIZE - 24], r
    r = c.rpc(Tread(42, 9, 0xFFFFFFFFFFFFFFFF, 100))
    assert (isinstance(r, Rread) and r.data == b"") or isinstance(r, Rerror), r
    c.send(encode(Twrite(43, 9, 0, b"no")))               # open for reading only
    rejected(c, 43)
    c.walk(0, 10, ["keep", "data"])
    assert isinstance(c.rpc(Topen(44, 10, codec.OWRITE)), Ropen)
    for off in (0xFFFFFFFFFFFFFFFF, 1 << 62):
        c.send(encode(Twrite(45, 10, off, b"far")))
        rejected(c, 45)
    c.send(encode(Twstat(46, 10, stat_entry(length=1 << 62))))
    rejected(c, 46)


# Bad string lengths ----------------------------------------------------------------------

@case()
def string_lengths_past_the_end(c, h):
    for mtype, body in [
        (Tversion.type, struct.pack("<IH", MSIZE, 0xFFFF) + b"9P2000"),
        (Tattach.type, struct.pack("<IIH", 9, NOFID, 1000) + USER.encode() + s("")),
        (Tattach.type, struct.pack("<II", 9, NOFID) + s(USER) + struct.pack("<H", 2)),
        (Tauth.type, struct.pack("<IH", 9, 7) + b"abc"),
        (Twalk.type, struct.pack("<IIHH", 0, 9, 1, 5) + b"kee"),
        (Twalk.type, struct.pack("<IIH", 0, 9, 2) + s("keep") + struct.pack("<H", 0xFFFF)),
        (Tcreate.type, struct.pack("<IH", 0, 300) + b"new" + struct.pack("<IB", 0o644, 0)),
        (Tcreate.type, struct.pack("<IH", 0, 1) + b"new" + struct.pack("<IB", 0o644, 0)),
    ]:
        tag = 0x200 + mtype
        c.send(frame(mtype, tag, body))
        if rejected(c, tag) == "closed":
            return


def _wstat_frame(tag, fid, entry):
    return frame(Twstat.type, tag, struct.pack("<IH", fid, len(entry)) + entry)


@case()
def stat_entries_that_disagree_with_themselves(c, h):
    c.walk(0, 9, ["keep", "data"])
    good = pack_stat(stat_entry(name="renamed"))
    n = len(good)
    bad = [
        struct.pack("<H", n) + good[2:],                        # size too large by 2
        struct.pack("<H", n - 4) + good[2:],                    # size too small
        good[:-2] + b"\xff\xff",                                # muid length past the end
        good[:41] + struct.pack("<H", 200) + good[43:],         # name length past the end
        good + b"\x00\x00",                                     # trailing bytes in the entry
    ]
    for i, entry in enumerate(bad):
        c.send(_wstat_frame(0x300 + i, 9, entry))
        if rejected(c, 0x300 + i) == "closed":
            return
    # n[2] disagreeing with the frame
    c.send(frame(Twstat.type, 0x310, struct.pack("<IH", 9, n + 10) + good))
    if rejected(c, 0x310) == "closed":
        return
    c.send(frame(Twstat.type, 0x311, struct.pack("<IH", 9, n - 10) + good))
    rejected(c, 0x311)


@case()
def invalid_utf8(c, h):
    for mtype, body in [
        (Twalk.type, struct.pack("<IIH", 0, 9, 1) + s(b"\xff\xfe")),
        (Twalk.type, struct.pack("<IIH", 0, 9, 2) + s("keep") + s(b"d\xc0\xafx")),  # overlong '/'
        (Tcreate.type, struct.pack("<I", 0) + s(b"\xc0\xae\xc0\xae") + struct.pack("<IB", 0o644, 0)),
        (Tattach.type, struct.pack("<II", 9, NOFID) + s(b"\xed\xa0\x80") + s("")),  # a surrogate
        (Tversion.type, struct.pack("<I", MSIZE) + s(b"9P2000\xff")),
    ]:
        tag = 0x400 + mtype
        c.send(frame(mtype, tag, body))
        if rejected(c, tag) == "closed":
            return
    c.walk(0, 9, ["keep", "data"])
    entry = bytearray(pack_stat(stat_entry(name="x")))
    assert entry[41:44] == b"\x01\x00x"             # name[s] follows the fixed fields
    entry[43] = 0xFF
    c.send(_wstat_frame(0x480, 9, bytes(entry)))
    rejected(c, 0x480)


# Unknown types -----------------------------------------------------------------------------

_REPLIES = [encode(m) for m in (
    Rversion(1, MSIZE, "9P2000"), codec.Rauth(2, Qid(0, 0, 1)), Rattach(3, Qid(0x80, 0, 1)),
    Rerror(4, "nope"), Rflush(5), Rwalk(6, [Qid(0, 0, 2)]), Ropen(7, Qid(0, 0, 2), 100),
    codec.Rcreate(8, Qid(0, 0, 2), 100), Rread(9, b"data"), codec.Rwrite(10, 4), Rclunk(11),
    codec.Rremove(12), Rstat(13, stat_entry(name="x")), codec.Rwstat(14))]


@case(setup="none")
def unknown_types_before_version(c, h):
    for i, f in enumerate([frame(0, 50, b""), frame(106, 51, s("Terror")), frame(255, 52, b"x"),
                           frame(99, 53, b"\x00" * 4)] + _REPLIES[:4]):
        tag = struct.unpack_from("<H", f, 5)[0]
        c.send(f)
        if rejected(c, tag) == "closed":
            return


@case()
def unknown_types(c, h):
    for f in ([frame(t, 60 + i, b"\x00" * 11) for i, t in enumerate((0, 1, 99, 106, 128, 200,
                                                                      255))]
              + _REPLIES):
        tag = struct.unpack_from("<H", f, 5)[0]
        c.send(f)
        if rejected(c, tag) == "closed":
            return


@case(setup="none")
def requests_before_version(c, h):
    for m in (Tattach(1, 0, NOFID, USER, ""), Twalk(2, 0, 1, []), Tstat(3, 0), Tclunk(4, 0),
              Tflush(5, 1), Tauth(6, 0, USER, "")):
        c.send(encode(m))
        if rejected(c, m.tag) == "closed":
            return


@case(setup="none")
def version_msize_too_small_leaves_no_session(c, h):
    c.send(encode(Tversion(NOTAG, 100, "9P2000")))
    r = c.recv()
    if r is None:
        return
    assert isinstance(r, Rerror) or (isinstance(r, Rversion) and r.version == "unknown"), r
    c.send(encode(Tattach(1, 0, NOFID, USER, "")))
    rejected(c, 1)


# Walks -------------------------------------------------------------------------------------

@case()
def walk_17_names(c, h):
    # Seventeen '..' from the root would all succeed: only the count is wrong.
    c.send(walk_frame(70, 0, 9, [".."] * 17))
    if rejected(c, 70) == "closed":
        return
    c.send(walk_frame(71, 0, 0, ["keep"] + [".."] * 15 + ["keep"]))       # in place
    if rejected(c, 71) == "closed":
        return
    c.send(walk_frame(72, 0, 9, [], nwname=0xFFFF))
    if rejected(c, 72) == "closed":
        return
    c.send(walk_frame(73, 0, 9, [".."] * 16, nwname=17))
    if rejected(c, 73) == "closed":
        return
    # Nothing was bound, nothing moved: newfid 9 is unknown, fid 0 is still the root.
    assert isinstance(c.rpc(Tclunk(74, 9)), Rerror)
    assert c.rpc(Tstat(75, 0)).stat.name == "root"


@case()
def walk_16_names_is_allowed(c, h):
    r = c.rpc(Twalk(76, 0, 9, ["keep", ".."] * 8))
    assert isinstance(r, Rwalk) and len(r.wqids) == 16, r


@case()
def walk_elements_with_slash_nul_dot_or_empty(c, h):
    for i, names in enumerate([["keep/data"], ["keep/"], ["/"], ["/keep"], ["\0"], ["ke\0ep"],
                               ["."], [""], ["keep", "."], ["keep", "sub/.."],
                               ["keep", "data\0"], ["x" * 256], ["keep", "é" * 128]]):
        tag = 80 + i
        c.send(walk_frame(tag, 0, 9, names))
        if rejected(c, tag, NAME_ERRORS) == "closed":
            return
    assert isinstance(c.rpc(Tclunk(99, 9)), Rerror)     # no walk bound newfid 9


@case()
def walk_dotdot_is_legal(c, h):
    r = c.rpc(Twalk(100, 0, 9, ["keep", "..", "keep", "data"]))
    assert isinstance(r, Rwalk) and len(r.wqids) == 4 and r.wqids[1] == c.rpc(Tstat(101, 0)).stat.qid
    r = c.rpc(Twalk(102, 0, 0, [".."]))     # above the root is the root
    assert isinstance(r, Rwalk) and len(r.wqids) == 1, r


BAD_CREATE_NAMES = ["", ".", "..", "/", "a/b", "../x", "keep/new", "a\0b", "\0", "x" * 256]


@case()
def create_names(c, h):
    c.walk(0, 9, ["keep"])
    i = 0
    for perm in (0o644, DMDIR | 0o755):
        for name in BAD_CREATE_NAMES:
            tag = 0x500 + i
            i += 1
            c.send(create_frame(tag, 9, name, perm))
            if rejected(c, tag, NAME_ERRORS) == "closed":
                return
    # fid 9 is still the unopened directory keep
    r = c.rpc(Tstat(0x5ff, 9))
    assert isinstance(r, Rstat) and r.stat.name == "keep", r


@case()
def rename_names(c, h):
    c.walk(0, 9, ["keep", "data"])
    c.walk(0, 10, ["keep", "sub"])
    i = 0
    for fid in (9, 10):
        for name in [".", "..", "/", "a/b", "../data", "x\0y", "\0", "x" * 256]:
            tag = 0x600 + i
            i += 1
            c.send(encode(Twstat(tag, fid, stat_entry(name=name))))
            if rejected(c, tag, NAME_ERRORS) == "closed":
                return
    assert c.rpc(Tstat(0x6ff, 9)).stat.name == "data"
    assert c.rpc(Tstat(0x6ff, 10)).stat.name == "sub"


@case()
def changes_that_must_be_refused(c, h):
    c.walk(0, 9, ["keep", "data"])
    c.walk(0, 10, ["keep"])
    c.walk(0, 11, [])
    refused = [
        Twstat(1, 9, stat_entry(mode=DMDIR | 0o644)),           # a file into a directory
        Twstat(2, 10, stat_entry(mode=0o755)),                  # a directory into a file
        Twstat(3, 10, stat_entry(length=5)),                    # a directory's length
        Twstat(4, 9, stat_entry(mode=0o10000644)),              # unknown mode bits
        Twstat(5, 11, stat_entry(name="elsewhere")),            # rename the root
        Twstat(6, 9, stat_entry(name="sub")),                   # onto a directory
        Twstat(7, 9, stat_entry(uid="nobody-such")),
        Tcreate(8, 9, "new", 0o644, OREAD),                     # create in a file
        Tcreate(9, 10, "new", 0o10000644, OREAD),               # unknown perm bits
        Tcreate(10, 10, "data", 0o644, OREAD),                  # exists
        Topen(11, 10, codec.OWRITE),                            # a directory for writing
        Topen(12, 10, codec.OREAD | codec.OTRUNC),
    ]
    for m in refused:
        c.send(encode(m))
        if rejected(c, m.tag) == "closed":
            return
    c.walk(0, 12, ["keep"])
    c.send(encode(Tremove(20, 12)))                             # not empty
    if rejected(c, 20) == "closed":
        return
    c.send(encode(Tremove(21, 11)))                             # the root
    rejected(c, 21)


# Duplicate tags and fids -------------------------------------------------------------------

def _blocked_cons_reader(c):
    """fid 1 open on /cons with its prompt read: the next Tread on it waits."""
    c.walk(0, 1, ["cons"])
    assert isinstance(c.rpc(Topen(110, 1, OREAD)), Ropen)
    r = c.rpc(Tread(111, 1, 0, 1000))
    assert isinstance(r, Rread) and r.data, r


@case(setup="main")
def duplicate_tag_in_flight(c, h):
    _blocked_cons_reader(c)
    c.send(encode(Tread(120, 1, 0, 1000)))
    c.send(encode(Tstat(120, 0)))           # same tag while the read waits
    r = c.recv()
    assert r is not None, "closed"
    assert isinstance(r, Rerror) and r.tag == 120, r
    r = c.rpc(Tflush(121, 120))
    assert isinstance(r, Rflush), r
    # After Rflush nothing more comes for tag 120: the next reply answers the probe.
    r = c.rpc(Tstat(122, 0))
    assert isinstance(r, Rstat), r


@case(setup="main")
def too_many_tags_in_flight(c, h):
    _blocked_cons_reader(c)
    c.send(b"".join(encode(Tread(t, 1, 0, 100)) for t in range(1000, 1256)))
    c.send(encode(Tstat(2000, 0)))
    r = c.recv()
    assert r is not None, "closed"
    assert isinstance(r, Rerror) and r.tag == 2000, r
    # (Tflush and Tversion at the limit: test_flush_at_the_tag_limit and the next one below)


@case(setup="main")
def version_aborts_requests_in_flight(c, h):
    _blocked_cons_reader(c)
    c.send(encode(Tread(120, 1, 0, 1000)))
    r = c.rpc(Tversion(NOTAG, MSIZE, "9P2000"))
    assert isinstance(r, Rversion), r
    # Nothing is ever answered for tag 120 now, and every fid is gone.
    r = c.rpc(Tstat(121, 0))
    assert isinstance(r, Rerror), r
    c.attach(0)
    assert isinstance(c.rpc(Tstat(122, 0)), Rstat)


@case()
def too_many_fids(c, h):
    # 65536 fids at most per connection (the server's max_fids): fid 0 and 65535 clones.
    # (in batches, reading the replies: the server stops reading a client that does not)
    for first in range(1, 65536, 4096):
        fids = range(first, min(first + 4096, 65536))
        c.send(b"".join(encode(Twalk(1, 0, fid, [])) for fid in fids))
        for _ in fids:
            r = c.recv()
            assert isinstance(r, Rwalk), r
    c.send(encode(Twalk(2, 0, 70000, [])))
    rejected(c, 2)


@case()
def duplicate_fids(c, h):
    c.walk(0, 5, [])
    for m in (Tattach(130, 0, NOFID, USER, ""),          # fid 0 is taken
              Tattach(131, 5, NOFID, USER, ""),
              Tattach(132, NOFID, NOFID, USER, ""),      # NOFID is never a fid
              Twalk(133, 0, 5, ["keep"]),                # newfid taken
              Twalk(134, 0, NOFID, []),
              Tauth(135, 5, USER, ""),
              Tauth(136, NOFID, USER, "")):
        c.send(encode(m))
        if rejected(c, m.tag) == "closed":
            return
    # fid 5 is still the clone of the root it was
    r = c.rpc(Tstat(137, 5))
    assert isinstance(r, Rstat) and r.stat.name == "root", r


@case()
def unknown_and_misused_fids(c, h):
    c.walk(0, 9, ["keep", "data"])
    assert isinstance(c.rpc(Topen(140, 9, OREAD)), Ropen)
    for m in (Tclunk(141, 99), Tstat(142, 99), Tremove(143, 99), Twalk(144, 99, 100, []),
              Topen(145, 99, OREAD), Tread(146, 99, 0, 10), Twrite(147, 99, 0, b"x"),
              Twstat(148, 99, stat_entry()), Tcreate(149, 99, "n", 0o644, OREAD),
              Twalk(150, 9, 9, [".."]),                  # an open fid walked in place
              Topen(151, 9, OREAD),                      # opened twice
              Tread(152, 0, 0, 10)):                     # not open
        c.send(encode(m))
        if rejected(c, m.tag) == "closed":
            return


@case()
def attach_with_an_unknown_afid(c, h):
    # (afid naming a fid that is not an auth file: test_attach_with_a_non_auth_afid below)
    c.send(encode(Tattach(161, 6, 0x1234, USER, "")))
    if rejected(c, 161) == "closed":
        return
    assert isinstance(c.rpc(Tclunk(162, 6)), Rerror)        # fid 6 was never bound


@case()
def directory_read_offsets(c, h):
    c.walk(0, 9, ["keep"])
    assert isinstance(c.rpc(Topen(170, 9, OREAD)), Ropen)
    c.send(encode(Tread(171, 9, 5, 1000)))          # not where the last read ended
    if rejected(c, 171) == "closed":
        return
    c.send(encode(Tread(172, 9, 0, 10)))            # no stat entry fits in 10 bytes
    if rejected(c, 172) == "closed":
        return
    r = c.rpc(Tread(173, 9, 0, 8000))
    assert isinstance(r, Rread) and len(r.data) > 0, r
    names = set()
    off = 0
    while off < len(r.data):
        st, off = codec.unpack_stat(r.data, off)
        names.add(st.name)
    assert names == {"data", "sub"}
    c.send(encode(Tread(174, 9, len(r.data) + 1, 8000)))
    if rejected(c, 174) == "closed":
        return
    r = c.rpc(Tread(175, 9, len(r.data), 8000))     # the end
    assert isinstance(r, Rread) and r.data == b"", r


# -- the tests ----------------------------------------------------------------------------------

@pytest.mark.parametrize("transport", ["tcp", "unix"])
@pytest.mark.parametrize("name", list(CASES))
def test_malformed(server, name, transport):
    fn, setup = CASES[name]
    healthy = Healthy(server, transport)
    try:
        c = Raw(server, transport)
        try:
            if setup != "none":
                c.version()
            if setup == "attach":
                c.attach(0)
            elif setup == "main":
                c.attach(0, "main")
            fn(c, healthy)
        finally:
            c.close()
        assert server.alive(), server.log_tail()
        healthy.check()
    finally:
        healthy.close()
    # and a connection made after the attack is served too
    late = Healthy(server, transport)
    late.check()
    late.close()


def no_internal_errors(server):
    """The server's log shows no exception escaping into an "internal error" Rerror."""
    log = server.log_tail(1 << 20)
    assert "internal error" not in log and "Traceback" not in log, log[-4000:]


def test_nothing_on_disk_changed(server):
    """Run last: no attack changed anything, so the sync at SIGTERM writes nothing."""
    assert server.alive(), server.log_tail()
    assert server.stop() == 0, server.log_tail()
    assert sha256(server.disk) == server.hash_before
    no_internal_errors(server)


# -- known bugs: each on a server of its own, since they log internal errors -----------------

@pytest.fixture(scope="module")
def bug_server(tmp_path_factory):
    srv = RealServer(str(tmp_path_factory.mktemp("bugs")))
    yield srv
    srv.stop()


def _at_the_tag_limit(srv):
    """A connection with fid 1 on /cons and 256 reads of it waiting (the server's max_tags)."""
    c = Raw(srv)
    c.version()
    c.attach(0, "main")
    _blocked_cons_reader(c)
    c.send(b"".join(encode(Tread(t, 1, 0, 100)) for t in range(1000, 1256)))
    c.send(encode(Tstat(2000, 0)))
    r = c.recv()
    assert isinstance(r, Rerror) and r.tag == 2000 and "too many" in r.ename, r
    return c


def test_attach_with_a_non_auth_afid(bug_server):
    c = Raw(bug_server)
    try:
        c.version()
        c.attach(0)
        r = c.rpc(Tattach(160, 5, 0, USER, ""))     # afid 0: the root, not an auth file
        assert isinstance(r, Rerror), r
        assert not r.ename.startswith("internal error"), r
    finally:
        c.close()


# -- fuzzing -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory):
    srv = RealServer(str(tmp_path_factory.mktemp("fuzz")))
    try:
        with SyncClient(srv.tcp, timeout=TIMEOUT) as c:
            c.mkdir("keep")
            c.write_file("keep/data", DATA)
            c.mkdir("keep/sub")
        # One healthy connection for the whole run, opened before every attack: fid 1 is open
        # on keep/data, so it keeps reading even if a fuzzed frame renames keep (it may).
        srv.healthy = Raw(srv)
        srv.healthy.version()
        srv.healthy.attach(0)
        srv.healthy.walk(0, 1, ["keep", "data"])
        assert isinstance(srv.healthy.rpc(Topen(3, 1, OREAD)), Ropen)
        yield srv
    finally:
        srv.stop()


# Well-formed requests on the fuzz connection's fids (0: the root, 1: a clone of it), to mutate.
_TEMPLATES = [encode(m) for m in (
    Tversion(NOTAG, MSIZE, "9P2000"), Tauth(1, 2, USER, ""), Tattach(1, 2, NOFID, USER, "main"),
    Tflush(1, 2), Twalk(1, 0, 2, ["keep", "sub"]), Twalk(1, 1, 1, ["keep", "..", "keep"]),
    Topen(1, 1, OREAD), Tcreate(1, 1, "fz", 0o644, codec.ORDWR),
    Tcreate(1, 1, "fzd", DMDIR | 0o755, OREAD), Tread(1, 1, 0, 100),
    Twrite(1, 1, 0, b"abc"), Tclunk(1, 1), Tremove(1, 1), Tstat(1, 0),
    Twstat(1, 1, stat_entry(name="fzz")), Twstat(1, 1, stat_entry()))]


@st.composite
def fuzz_frames(draw):
    """Bytes with an honest size[4]: random bodies, or mutated well-formed requests."""
    if draw(st.booleans()):
        mtype = draw(st.one_of(st.integers(100, 127), st.integers(0, 255)))
        tag = draw(st.integers(0, 0xFFFF))
        return frame(mtype, tag, draw(st.binary(max_size=96)))
    f = bytearray(draw(st.sampled_from(_TEMPLATES)))
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(4, len(f) - 1))
        f[i] = draw(st.integers(0, 255))
    cut = draw(st.integers(0, 8))
    if cut and len(f) - cut >= 7:
        f = f[:len(f) - cut] if draw(st.booleans()) else f[:7] + f[7 + cut:]
    f += draw(st.binary(max_size=4))
    struct.pack_into("<I", f, 0, len(f))
    return bytes(f)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames=st.lists(fuzz_frames(), min_size=1, max_size=3), versioned=st.booleans())
def test_fuzzed_frames_never_stop_the_server(fuzz_server, frames, versioned):
    c = Raw(fuzz_server)
    try:
        if versioned:
            c.version()
            c.attach(0)
            c.walk(0, 1, [])
        c.send(*frames, encode(Tflush(PROBE, 0xFFFD)))
        # Read until the probe is answered or the server hangs up; anything else goes by.
        while True:
            r = c.recv()
            if r is None or r.tag == PROBE:
                break
    finally:
        c.close()
    assert fuzz_server.alive(), fuzz_server.log_tail()
    healthy = fuzz_server.healthy
    r = healthy.rpc(Twalk(4, 0, 2, []))
    assert isinstance(r, Rwalk), r
    r = healthy.rpc(Tstat(5, 2))
    assert isinstance(r, Rstat) and r.stat.qid.type & 0x80, r
    assert isinstance(healthy.rpc(Tclunk(6, 2)), Rclunk)
    r = healthy.rpc(Tread(7, 1, 0, 100))
    assert isinstance(r, Rread) and r.data == DATA[:100], r
