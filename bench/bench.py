#!/usr/bin/env python3
"""creepy's benchmark: one run, one table, creepy beside ceilings measured in the same run.

    python bench/bench.py [--seconds 2] [--mib 256] [--profile out.prof]

Every server is a process of its own (the client never shares a GIL with a server):

- creepy 9pix on a fresh 2 GiB disk in a temporary directory, over loopback TCP;
- the message ceiling: a bare asyncio 9P responder (ceiling.py 9p) answering every request
  with a fixed reply of the right type, no file system;
- the byte ceiling: a plain TCP stream between two processes (ceiling.py stream), the same
  bytes in writes of the same size as the 9P payloads;
- the sync ceiling: sequential append of the same bytes to a file beside the disk, then fsync;
- py9p's own server (p9fs's py9p.Server with py9p's LocalFs, via py9p_serve.py) serving a
  temporary directory, on the same client workloads.

Client techniques (the same against every server, so ratios compare servers):

- "raw": N lanes of precomputed frames pipelined on one connection, each lane one request in
  flight, the next frame sent from the reply callback: the client costs ~2 µs a message, so
  the rate is the server's; for bytes, a blocking socket that does no more than the TCP
  stream's client (raw_sequential), so that against the stream it is the server measured;
- "Client": creepy.ninep.client.Client (what our tools use), N coroutines on one connection.

See bench/README.md for what each row measures.
"""

import argparse
import asyncio
import os
import random
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)

from creepy.ninep.client import Client, Error9P, nochange  # noqa: E402
from creepy.ninep.codec import (  # noqa: E402
    IOHDRSZ, NOFID, NONUNAME, NOTAG, OREAD, OWRITE, Tattach, TattachL, Tclunk, Tcreate,
    Tgetattr, Tlcreate, Tlopen, Topen, Tremove, Tstat, Tversion, Twalk, encode,
)
from creepy.ninep.dial import getuser  # noqa: E402
from harness import free_port  # noqa: E402

HEAD = struct.Struct("<IBH")
USER = getuser()
MSG_MSIZE = 8192 + IOHDRSZ
KIB8 = 8 << 10
KIB64 = 64 << 10
MIB = 1 << 20
WINDOW = 8                      # reads or writes in flight in a sequential transfer
SMALL = bytes(range(256)) * 4   # 1 KiB: the content of a small file
DIALECTS = ("9P2000", "9P2000.L")
DIRNAME = "dir"                 # the directory read; the bare 9P server knows the name too
try:
    import uvloop  # noqa: F401
    DEFAULT_LOOP = "uvloop"
except ImportError:
    DEFAULT_LOOP = "asyncio"


def env():
    e = dict(os.environ)
    e["PYTHONPATH"] = REPO + (os.pathsep + e["PYTHONPATH"] if e.get("PYTHONPATH") else "")
    return e


# -- processes --------------------------------------------------------------------------------

# With --pin, the client runs on one CPU and every server on another, so that the two never
# share a CPU by chance (on a 2-CPU machine that otherwise makes rates bimodal).
PIN = {"client": None, "server": None}


def pin_server():
    if PIN["server"] is not None:
        os.sched_setaffinity(0, PIN["server"])


class Proc:
    """A server process; its port is read from its first line of output, or given."""

    def __init__(self, name, args, port=None, stderr=None, extra_env=None):
        self.name = name
        self.p = subprocess.Popen(args, stdin=subprocess.DEVNULL, env={**env(), **(extra_env or {})},
                                  preexec_fn=pin_server,
                                  stdout=subprocess.PIPE if port is None else subprocess.DEVNULL,
                                  stderr=stderr if stderr is not None else subprocess.DEVNULL)
        if port is None:
            line = self.p.stdout.readline()
            if not line.strip():
                self.stop(signal.SIGKILL)
                raise SystemExit(f"bench: {name} did not start")
            port = int(line)
        self.port = port
        self.addr = f"tcp!127.0.0.1!{port}"
        deadline = time.monotonic() + 60
        while True:
            if self.p.poll() is not None:
                raise SystemExit(f"bench: {name} exited with status {self.p.returncode}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    self.stop(signal.SIGKILL)
                    raise SystemExit(f"bench: {name} does not accept connections")
                time.sleep(0.05)

    def stop(self, sig=signal.SIGTERM, timeout=120):
        if self.p.poll() is None:
            self.p.send_signal(sig)
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        return self.p.returncode


# -- raw pipelined lanes ----------------------------------------------------------------------

class Lanes(asyncio.BufferedProtocol):
    """Lanes of requests, one in flight per lane, each lane cycling through its frames."""

    def __init__(self):
        self.buf = bytearray(4 << 20)
        self.view = memoryview(self.buf)
        self.start = self.end = 0
        self.waiters = {}
        self.lanes = ()
        self.count = 0
        self.stopping = False
        self.idle = 0
        self.done = asyncio.get_running_loop().create_future()
        self.error = None
        self.lost = asyncio.get_running_loop().create_future()

    def connection_made(self, transport):
        self.transport = transport

    def connection_lost(self, exc):
        self.lost.set_result(None)
        if not self.done.done():
            self.error = self.error or "connection lost"
            self.done.set_result(None)
        for f in self.waiters.values():
            if not f.done():
                f.set_exception(ConnectionError("connection lost"))

    def get_buffer(self, sizehint):
        if self.start == self.end:
            self.start = self.end = 0
        elif len(self.buf) - self.end < 65536:
            live = self.end - self.start
            self.view[:live] = self.view[self.start:self.end]
            self.start, self.end = 0, live
        return self.view[self.end:]

    def buffer_updated(self, nbytes):
        self.end += nbytes
        buf = self.buf
        lanes = self.lanes
        nlanes = len(lanes)
        out = []
        while self.end - self.start >= 7:
            start = self.start
            size, mtype, tag = HEAD.unpack_from(buf, start)
            if self.end - start < size:
                break
            self.start = start + size
            if tag >= nlanes:
                fut = self.waiters.pop(tag, None)
                if fut is not None:
                    fut.set_result(bytes(buf[start:start + size]))
                continue
            lane = lanes[tag]
            step = lane[0]
            if mtype != lane[2][step]:
                if self.error is None:
                    self.error = f"lane {tag}: reply type {mtype}, expected {lane[2][step]}"
                self.stopping = True
            self.count += 1
            step += 1
            if step == len(lane[1]):
                step = 0
            lane[0] = step
            if self.stopping:
                self.idle += 1
                if self.idle == nlanes and not self.done.done():
                    self.done.set_result(None)
            else:
                out.append(lane[1][step])
        if out:
            self.transport.write(out[0] if len(out) == 1 else b"".join(out))
        if self.start == self.end:
            self.start = self.end = 0

    async def call(self, frame, tag):
        fut = self.waiters[tag] = asyncio.get_running_loop().create_future()
        self.transport.write(frame)
        return await fut


async def raw_rate(port, depth, seconds, warm, cycle, version="9P2000"):
    """Round trips per second of `depth` lanes; cycle(tag, fid) gives a lane's (frames,
    expected reply types)."""
    loop = asyncio.get_running_loop()
    _, p = await loop.create_connection(Lanes, "127.0.0.1", port)
    try:
        r = await p.call(encode(Tversion(NOTAG, MSG_MSIZE, version)), NOTAG)
        assert r[4] == 101 and version.encode() in r, r
        attach = (TattachL(0xFFFE, 0, NOFID, USER, "", NONUNAME) if version == "9P2000.L"
                  else Tattach(0xFFFE, 0, NOFID, USER, ""))
        r = await p.call(encode(attach), 0xFFFE)
        assert r[4] == 105, r
        p.lanes = [[0, *cycle(i, 1000 + i)] for i in range(depth)]
        p.transport.write(b"".join(lane[1][0] for lane in p.lanes))
        return await _window(p, seconds, warm)
    finally:
        p.transport.close()
        await p.lost


async def _window(p, seconds, warm):
    await asyncio.sleep(warm)
    c0, t0 = p.count, time.perf_counter()
    await asyncio.sleep(seconds)
    c1, t1 = p.count, time.perf_counter()
    p.stopping = True
    await asyncio.wait_for(p.done, 30)
    if p.error:
        raise SystemExit(f"bench: {p.error}")
    return (c1 - c0) / (t1 - t0)


def walk_stat_clunk(name, version="9P2000"):
    """Twalk, Tstat (9P2000.L: Tgetattr, what Linux sends for stat(2)), Tclunk."""
    def cycle(tag, fid):
        if version == "9P2000.L":
            return ([encode(Twalk(tag, 0, fid, [name])), encode(Tgetattr(tag, fid, 0x7FF)),
                     encode(Tclunk(tag, fid))], (111, 25, 121))
        return ([encode(Twalk(tag, 0, fid, [name])), encode(Tstat(tag, fid)),
                 encode(Tclunk(tag, fid))], (111, 125, 121))
    return cycle


# -- the Client technique ---------------------------------------------------------------------

async def client_rate(addr, depth, seconds, warm, name, version="9P2000"):
    """Round trips per second of walk+stat+clunk by `depth` coroutines on one Client."""
    c = await Client.connect(addr, msize=MSG_MSIZE, version=version)
    count = 0
    stop = False

    async def worker():
        nonlocal count
        while not stop:
            f = await c.walkpath(name)
            await c.stat(f)
            await c.clunk(f)
            count += 3

    tasks = [asyncio.ensure_future(worker()) for _ in range(depth)]
    try:
        await asyncio.sleep(warm)
        c0, t0 = count, time.perf_counter()
        await asyncio.sleep(seconds)
        c1, t1 = count, time.perf_counter()
        stop = True
        await asyncio.gather(*tasks)
    finally:
        await c.close()
    return (c1 - c0) / (t1 - t0)


async def create_remove(addr, depth, seconds, dirname, check=True, version="9P2000"):
    """(creates per second, removes per second) of small files: walk, create (9P2000.L:
    Tlcreate), write 1 KiB, clunk; then walk, remove every file created; `depth` coroutines
    on one Client."""
    c = await Client.connect(addr, msize=MSG_MSIZE, version=version)
    try:
        made = []
        stop = False

        async def creator(k):
            i = 0
            while not stop:
                name = f"f{k}.{i}"
                i += 1
                f = await c.walkpath(dirname)
                await c.create(f, name, 0o644, OWRITE)
                await c.write(f, 0, SMALL)
                await c.clunk(f)
                made.append(name)

        t0 = time.perf_counter()
        tasks = [asyncio.ensure_future(creator(k)) for k in range(depth)]
        await asyncio.sleep(seconds)
        stop = True
        await asyncio.gather(*tasks)
        t1 = time.perf_counter()
        names = iter(list(made))

        async def remover():
            for name in names:
                await c.remove(await c.walkpath(f"{dirname}/{name}"))

        await asyncio.gather(*(remover() for _ in range(depth)))
        t2 = time.perf_counter()
        left = await c.listdir(dirname) if check else ()
        if left:
            raise SystemExit(f"bench: {len(left)} files left after removing")
    finally:
        await c.close()
    return len(made) / (t1 - t0), len(made) / (t2 - t1)


async def sequential(addr, payload, data, name, sync=False, verify=True, version="9P2000"):
    """(write MB/s, write+sync MB/s or None, sync-alone MB/s or None, read MB/s) of one file
    written then read through one Client, WINDOW requests in flight, payload bytes each.
    The sync is a no-change Twstat (9P2000.L: Tfsync)."""
    c = await Client.connect(addr, msize=payload + IOHDRSZ, version=version)
    assert c.msize == payload + IOHDRSZ, c.msize
    size = len(data)
    try:
        # OWRITE, then a fresh fid open OREAD: py9p's LocalFs fails a create with ORDWR.
        f = await c.walkpath("")
        # Start clean: commit what earlier rows left in memory, so that no sync they forced
        # runs during this row (a row measures the 9P path into the server's memory).
        try:
            await c.wstat(f, nochange())
        except Error9P:
            pass                                # py9p's server: nothing to commit
        await c.create(f, name, 0o644, OWRITE)
        assert c.iounit(f) == payload, c.iounit(f)
        t0 = time.perf_counter()
        n = await c.write(f, 0, data)
        t1 = time.perf_counter()
        assert n == size, n
        ws = so = None
        if sync:
            await c.wstat(f, nochange())        # commit to stable storage
            t2 = time.perf_counter()
            ws, so = size / (t2 - t0) / 1e6, size / (t2 - t1) / 1e6
        await c.clunk(f)
        f = await c.walkpath(name)
        await c.open(f, OREAD)
        offsets = iter(range(0, size, payload))
        got = 0

        async def reader():
            nonlocal got
            for off in offsets:
                n = len(await c.read(f, off, payload))
                got += n

        t3 = time.perf_counter()
        await asyncio.gather(*(reader() for _ in range(WINDOW)))
        t4 = time.perf_counter()
        assert got == size, got
        for off in (0, size // 2 - 1000, size - payload) if verify else ():
            assert await c.read(f, off, payload) == data[off:off + payload], off
        await c.remove(f)               # its room is the next row's (after a sync and sweep)
    finally:
        await c.close()
    return size / (t1 - t0) / 1e6, ws, so, size / (t4 - t3) / 1e6


_TREAD = struct.Struct("<IBHIQI")     # size type tag fid offset count: Tread, and Twrite's head
_RHEAD = struct.Struct("<IBHI")       # size type tag count: Rread's head, and all of an Rwrite


def raw_sequential(port, payload, data, name, version="9P2000", depth=WINDOW):
    """(write MB/s, read MB/s) of one file written from offset 0, then read back, by a client
    that costs no more than the TCP stream's: a blocking socket, each Twrite's head and its
    slice of data sent with one sendmsg, each Rread's payload received into one reused
    buffer and not looked at, `depth` requests in flight.  The file is removed at the end.
    (bench's "raw" technique for bytes; Client rows add what our client costs.)"""
    size = len(data)
    assert size % payload == 0, (size, payload)
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    view = memoryview(data)
    head = bytearray(_RHEAD.size)
    sink = bytearray(payload)

    def exact(buf, n):
        if n and s.recv_into(buf, n, socket.MSG_WAITALL) != n:
            raise SystemExit("bench: raw client: the server hung up")

    def call(msg, rtype):
        s.sendall(encode(msg))
        exact(head, 4)
        rest = bytearray(struct.unpack_from("<I", head)[0] - 4)
        exact(rest, len(rest))
        if rest[0] != rtype:
            raise SystemExit(f"bench: raw client: {type(msg).__name__} answered "
                             f"{bytes(head[:4] + rest)!r}")

    def pipeline(frame, rtype, each):
        """frame(tag, offset) for every offset of the file, `depth` in flight, each sent on
        the tag its reply freed; each reply's head goes to each(size, count)."""
        offsets = iter(range(0, size, payload))
        inflight = 0
        for tag, off in zip(range(depth), offsets):
            s.sendmsg(frame(tag, off))
            inflight += 1
        while inflight:
            exact(head, _RHEAD.size)
            size_, rt, tag, count = _RHEAD.unpack(head)
            if rt != rtype:
                raise SystemExit(f"bench: raw client: reply type {rt}, expected {rtype}")
            each(size_, count)
            inflight -= 1
            off = next(offsets, None)
            if off is not None:
                s.sendmsg(frame(tag, off))
                inflight += 1

    def wrote(_, count):
        if count != payload:
            raise SystemExit(f"bench: raw client: short write {count}")

    def got(size_, count):
        left = size_ - _RHEAD.size
        while left:
            n = s.recv_into(sink, min(left, payload))
            if not n:
                raise SystemExit("bench: raw client: the server hung up")
            left -= n

    with s:
        call(Tversion(NOTAG, payload + IOHDRSZ, version), 101)
        if version == "9P2000.L":
            call(TattachL(0, 0, NOFID, USER, "", NONUNAME), 105)
        else:
            call(Tattach(0, 0, NOFID, USER, ""), 105)
        call(Twalk(0, 0, 1, []), 111)
        if version == "9P2000.L":
            call(Tlcreate(0, 1, name, 1 | 0o100 | 0o1000, 0o644, 0), 15)  # O_WRONLY|CREAT|TRUNC
        else:
            call(Tcreate(0, 1, name, 0o644, OWRITE), 115)
        t0 = time.perf_counter()
        pipeline(lambda tag, off: [_TREAD.pack(23 + payload, 118, tag, 1, off, payload),
                                   view[off:off + payload]], 119, wrote)
        t1 = time.perf_counter()
        call(Twalk(0, 0, 2, [name]), 111)
        if version == "9P2000.L":
            call(Tlopen(0, 2, 0), 13)
        else:
            call(Topen(0, 2, OREAD), 113)
        t2 = time.perf_counter()
        pipeline(lambda tag, off: [_TREAD.pack(23, 116, tag, 2, off, payload)], 117, got)
        t3 = time.perf_counter()
        call(Tremove(0, 2), 123)
        call(Tclunk(0, 1), 121)
    return size / (t1 - t0) / 1e6, size / (t3 - t2) / 1e6


def stream(port, op, data, chunk):
    """MB/s of a plain TCP stream: op 'W' sends data to the sink, 'R' receives as much."""
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    total = len(data)
    with s:
        view = memoryview(data)
        t0 = time.perf_counter()
        s.sendall(struct.pack("<cQQ", op.encode(), total, chunk))
        if op == "W":
            for off in range(0, total, chunk):
                s.sendall(view[off:off + chunk])
            assert s.recv(1) == b"k"
        else:
            buf = bytearray(chunk)
            left = total
            while left:
                n = s.recv_into(buf, min(left, chunk))
                if not n:
                    raise SystemExit("bench: stream source hung up")
                left -= n
            t1 = time.perf_counter()
            s.sendall(b"k")
            return total / (t1 - t0) / 1e6
        t1 = time.perf_counter()
    return total / (t1 - t0) / 1e6


def append_fsync(path, data, chunk=MIB):
    """MB/s of appending data to a new file in chunk-sized writes, then one fsync."""
    view = memoryview(data)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        t0 = time.perf_counter()
        for off in range(0, len(data), chunk):
            os.write(fd, view[off:off + chunk])
        os.fsync(fd)
        t1 = time.perf_counter()
    finally:
        os.close(fd)
        os.unlink(path)
    return len(data) / (t1 - t0) / 1e6


# -- the run ----------------------------------------------------------------------------------

def start_creepy(work, profile, cache=2048, loop="asyncio"):
    disk = os.path.join(work, "main.disk")
    subprocess.run([sys.executable, "-m", "creepy", "fmt", "-s", "2G", disk], check=True,
                   env=env(), stdout=subprocess.DEVNULL)
    port = free_port()
    pre = [sys.executable] + (["-m", "cProfile", "-o", profile] if profile else [])
    log = open(os.path.join(work, "9pix.log"), "wb")
    # -c 2048 (the default): a 2 GiB cache, so up to 512 MiB stays dirty in memory between syncs, and -i 3600:
    # no periodic sync: a write measures the 9P path to the server's memory, nothing else.
    return Proc("creepy 9pix",
                pre + ["-m", "creepy", "9pix", "-a", "-A", f"tcp!127.0.0.1!{port}", "-S",
                       os.path.join(work, "9pix.sock"), "-i", "3600", "-c", str(cache), disk],
                port=port, stderr=log, extra_env={"CREEPY_LOOP": loop})


async def setup_tree(addr, dirsize):
    """bench (a small file), cr (an empty directory) and dir (dirsize empty files)."""
    c = await Client.connect(addr)
    try:
        await c.write_file("bench", b"a small file for walk and stat\n")
        await c.mkdir("cr")
        await c.mkdir(DIRNAME)
        d = await c.walkpath(DIRNAME)
        sem = asyncio.Semaphore(16)

        async def make(i):
            async with sem:
                f = await c.walkpath("", d)
                await c.create(f, f"entry{i:05}", 0o644, OWRITE)
                await c.clunk(f)

        await asyncio.gather(*(make(i) for i in range(dirsize)))
        await c.clunk(d)
    finally:
        await c.close()


async def dir_rate(addr, seconds, warm, version="9P2000"):
    """Entries per second of whole reads of the directory DIRNAME by one reader: walk,
    open, read to the end (9P2000: Tread of stat entries; 9P2000.L: Treaddir, what getdents
    sends), clunk; msize 8 KiB."""
    c = await Client.connect(addr, msize=MSG_MSIZE, version=version)
    try:
        async def once():
            f = await c.walkpath(DIRNAME)
            await c.open(f, OREAD)
            n = len(await (c.readdir_all(f) if version == "9P2000.L" else c.dirreadall(f)))
            await c.clunk(f)
            return n

        entries = await once()
        if entries < 1:
            raise SystemExit(f"bench: {DIRNAME} read as empty")
        t_end = time.perf_counter() + warm
        while time.perf_counter() < t_end:
            await once()
        n = 0
        t0 = time.perf_counter()
        t_end = t0 + seconds
        while time.perf_counter() < t_end:
            n += await once()
        return n / (time.perf_counter() - t0)
    finally:
        await c.close()


def fmt_num(x):
    if x is None:
        return "-"
    if x >= 100:
        return f"{x:,.0f}"
    return f"{x:.3g}"


def fmt_ratio(x):
    return "-" if x is None else f"{x:.2f}"


class Runs:
    """Every measurement of a row, one value per run and server; medians and ratios."""

    def __init__(self):
        self.values = {}        # (row key, server) -> [one value per run]

    def add(self, key, server, value):
        if value is not None:
            self.values.setdefault((key, server), []).append(value)

    def median(self, key, server):
        v = self.values.get((key, server))
        return statistics.median(v) if v else None

    def ratio(self, key, a, b):
        """The median of the runs' ratios a/b (each run's pair measured back to back) and
        their spread (lowest, highest)."""
        va, vb = self.values.get((key, a)), self.values.get((key, b))
        if not va or not vb:
            return None, None, None
        rs = [x / y for x, y in zip(va, vb)]
        return statistics.median(rs), min(rs), max(rs)


def interleave(servers, run):
    """The servers in the order of this run: as given on even runs, reversed on odd ones, so
    that neither side is always measured first."""
    live = [s for s in servers if s[1] is not None]
    return live if run % 2 == 0 else live[::-1]


async def run(a):
    work = tempfile.mkdtemp(prefix="creepy-bench-")
    procs = []
    rows = []
    runs = Runs()
    loads = []
    t_start = time.perf_counter()
    try:
        creepy = start_creepy(work, a.profile, a.cache, a.loop)
        procs.append(creepy)
        ceil9p = Proc("ceiling 9p", [sys.executable, os.path.join(HERE, "ceiling.py"), "9p",
                                     a.bare_loop])
        procs.append(ceil9p)
        ceilstream = Proc("ceiling stream",
                          [sys.executable, os.path.join(HERE, "ceiling.py"), "stream"])
        procs.append(ceilstream)
        p9root = os.path.join(work, "py9p-root")
        os.mkdir(p9root)
        py9p = None
        try:
            py9p = Proc("py9p", [sys.executable, os.path.join(HERE, "py9p_serve.py"), p9root,
                                 str(MIB + IOHDRSZ)])
            procs.append(py9p)
        except (SystemExit, OSError) as e:
            print(f"bench: py9p's server not measured: {e}", file=sys.stderr)
        for srv in [creepy, ceil9p] + ([py9p] if py9p else []):
            await setup_tree(srv.addr, a.dirsize if srv is not ceil9p else 0)

        T, W = a.seconds, min(0.3, a.seconds / 4)
        size = a.mib * MIB
        data = None
        if "bytes" in a.only:
            rng = random.Random(9)      # (randbytes takes at most 256 MiB at a time)
            data = b"".join(rng.randbytes(min(16 * MIB, size - off))
                            for off in range(0, size, 16 * MIB))
        p9size = min(size, a.py9p_mib * MIB)
        payloads = (KIB8, KIB64, MIB)

        def say(what):
            print(f"  {time.perf_counter() - t_start:6.1f} s  {what}", file=sys.stderr,
                  flush=True)

        for r in range(a.runs):
            load0 = os.getloadavg()[0]
            say(f"run {r + 1} of {a.runs}, load average {load0:.2f}")
            if "messages" in a.only:
                # walk+stat+clunk: raw lanes and Client, 1 and 16 in flight, in each dialect
                # (py9p's server speaks 9P2000 only).
                for tech in ("raw", "Client"):
                    for depth in (1, 16):
                        for v in a.dialects:
                            key = ("wsc", tech, depth, v)
                            for name, srv in interleave(
                                    (("creepy", creepy), ("ceiling", ceil9p),
                                     ("py9p", py9p if v == "9P2000" else None)), r):
                                if tech == "raw":
                                    x = await raw_rate(srv.port, depth, T, W,
                                                       walk_stat_clunk("bench", v), v)
                                else:
                                    x = await client_rate(srv.addr, depth, T, W, "bench", v)
                                runs.add(key, name, x)
                say("messages done")

            if "files" in a.only:
                # Small files: create (walk, create, write 1 KiB, clunk) and remove (walk,
                # remove); directory reads.
                for v in a.dialects:
                    for name, srv in interleave(
                            (("creepy", creepy), ("ceiling", ceil9p),
                             ("py9p", py9p if v == "9P2000" else None)), r):
                        c, m = await create_remove(srv.addr, 16, T, "cr",
                                                   check=srv is not ceil9p, version=v)
                        runs.add(("create", v), name, c)
                        runs.add(("remove", v), name, m)
                    for name, srv in interleave(
                            (("creepy", creepy), ("ceiling", ceil9p),
                             ("py9p", py9p if v == "9P2000" else None)), r):
                        runs.add(("dir", v), name, await dir_rate(srv.addr, T, W, v))
                say("small files and directories done")

            if "bytes" in a.only:
                # Bytes: sequential write then read of one file at 8 KiB, 64 KiB and 1 MiB.
                for payload in payloads:
                    for v in a.dialects:
                        fname = f"seq{payload}{v[-1]}.{r}"
                        for name, srv in interleave(
                                (("creepy", creepy), ("ceiling", ceil9p),
                                 ("py9p", py9p if v == "9P2000" else None),
                                 ("stream", ceilstream)), r):
                            if name == "stream":
                                sw = stream(ceilstream.port, "W", data, payload)
                                sr = stream(ceilstream.port, "R", data, payload)
                                for tech in ("seq", "rseq"):
                                    runs.add((tech + "w", payload, v), name, sw)
                                    runs.add((tech + "r", payload, v), name, sr)
                                continue
                            if name != "py9p" and payload != KIB8:
                                # the raw client first: it removes its file at the end
                                w, rd = await asyncio.to_thread(
                                    raw_sequential, srv.port, payload, data, "raw" + fname, v)
                                runs.add(("rseqw", payload, v), name, w)
                                runs.add(("rseqr", payload, v), name, rd)
                            w, ws, so, rd = await sequential(
                                srv.addr, payload, data if name != "py9p" else data[:p9size],
                                fname, sync=name == "creepy" and payload == MIB,
                                verify=name == "creepy", version=v)
                            runs.add(("seqw", payload, v), name, w)
                            runs.add(("seqr", payload, v), name, rd)
                            if ws is not None:
                                runs.add(("seqws", v), name, ws)
                                runs.add(("sync", v), name, so)
                af = append_fsync(os.path.join(work, "append.raw"), data)
                for v in a.dialects:
                    runs.add(("seqws", v), "append", af)
                    runs.add(("sync", v), "append", af)
                say("bytes done")
            loads.append((load0, os.getloadavg()[0]))
        say("done; stopping the servers")
    finally:
        for p in procs:
            p.stop()
        if a.keep:
            print(f"bench: kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)

    def row(label, unit, key, ceil, kind, target=None, bare=False):
        if runs.median(key, "creepy") is None and runs.median(key, ceil) is None:
            return                      # a part not run (--only, --dialect)
        rows.append((label, unit, runs.median(key, "creepy"), runs.median(key, ceil), kind,
                     runs.ratio(key, "creepy", ceil), target, runs.median(key, "py9p"),
                     runs.ratio(key, "creepy", "py9p")[0],
                     runs.median(key, "ceiling") if bare else None))

    for tech in ("raw", "Client"):
        for depth in (1, 16):
            for v in a.dialects:
                row(f"walk+stat+clunk, {depth:2} in flight ({tech}, {v})", "RT/s",
                    ("wsc", tech, depth, v), "ceiling", "bare 9P",
                    TARGETS["wsc16"] if depth == 16 else None)
    for v in a.dialects:
        row(f"small-file create, 16 in flight (Client, {v})", "files/s", ("create", v),
            "ceiling", "bare 9P", TARGETS["create"])
        row(f"small-file remove, 16 in flight (Client, {v})", "files/s", ("remove", v),
            "ceiling", "bare 9P", TARGETS["remove"])
    for v in a.dialects:
        how = "Treaddir" if v == "9P2000.L" else "Tread"
        row(f"read a {a.dirsize:,}-entry directory ({how}, Client, {v})", "entries/s",
            ("dir", v), "ceiling", "bare 9P")
    for payload in payloads:
        label = {KIB8: "8 KiB ", KIB64: "64 KiB", MIB: "1 MiB "}[payload]
        for v in a.dialects:
            for op, what in (("seqw", "write,"), ("seqr", "read, ")):
                if payload == KIB8:
                    row(f"seq {what} msize {label} (Client, {WINDOW} in flight, {v})", "MB/s",
                        (op, payload, v), "ceiling", "bare 9P", TARGETS["seq8k"])
                    continue
                # Against the stream, the raw client (which costs what the stream's does)
                # carries the target; the Client row adds what our client costs.
                target = TARGETS[op + "1m"] if payload == MIB else None
                for tech in ("raw", "Client"):
                    row(f"seq {what} msize {label} ({tech}, {WINDOW} in flight, {v})", "MB/s",
                        (("r" if tech == "raw" else "") + op, payload, v), "stream",
                        "TCP stream", target if tech == "raw" else None, bare=True)
    for v in a.dialects:
        how = "Tfsync" if v == "9P2000.L" else "Twstat no-change"
        row(f"seq write + sync ({how}), msize 1 MiB", "MB/s", ("seqws", v), "append",
            "append+fsync")
        row(f"  the sync alone (after that write, {v})", "MB/s", ("sync", v), "append",
            "append+fsync")
    elapsed = time.perf_counter() - t_start
    print_table(rows, a, elapsed, loads)
    if a.profile:
        print(f"\nserver profile written to {a.profile}: python -m pstats {a.profile}")


# Acceptance targets of issue 11 (ratios to the ceiling named in the row).
TARGETS = {"wsc16": 0.85, "create": 0.9, "remove": 1.0, "seq8k": 0.8, "seqr1m": 0.5,
           "seqw1m": 0.8}


def print_table(rows, a, elapsed, loads):
    head = ("workload", "unit", "creepy", "ceiling", "ceiling is", "creepy/ceil", "(runs)",
            "target", "", "py9p", "creepy/py9p", "bare 9P")
    table = [head]
    for row in rows:
        name, unit, mine, ceil, kind, (ratio, lo, hi), target, py9p, vs_py9p, bare = row
        mark = ""
        if target is not None and ratio is not None:
            mark = "PASS" if ratio >= target else "MISS"
        spread = f"{lo:.2f}-{hi:.2f}" if lo is not None and a.runs > 1 else ""
        table.append((name, unit, fmt_num(mine), fmt_num(ceil), kind, fmt_ratio(ratio),
                      spread, f">= {target:.2f}" if target else "", mark, fmt_num(py9p),
                      fmt_ratio(vs_py9p), fmt_num(bare)))
    widths = [max(len(r[i]) for r in table) for i in range(len(head))]
    left = {0, 1, 4, 8}
    print(f"creepy benchmark: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, "
          f"{a.seconds:g} s per rate, {a.mib} MiB sequential (py9p {min(a.mib, a.py9p_mib)} "
          f"MiB), {a.runs} interleaved run(s), medians; event loop: creepy {a.loop}, bare 9P "
          f"{a.bare_loop}; {elapsed:.0f} s in all")
    print("load average at the start and end of each run (other work on the machine skews "
          "every number): " + ", ".join(f"{x:.2f}-{y:.2f}" for x, y in loads))
    for i, r in enumerate(table):
        print("  ".join(c.ljust(w) if j in left else c.rjust(w)
                        for j, (c, w) in enumerate(zip(r, widths))).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=2.0, help="time per rate (default 2)")
    ap.add_argument("--mib", type=int, default=256,
                    help="MiB written and read sequentially (default 256)")
    ap.add_argument("--py9p-mib", type=int, default=64,
                    help="MiB for py9p's sequential transfers (default 64: it is slow)")
    ap.add_argument("--profile", metavar="FILE",
                    help="run creepy 9pix under cProfile and write its profile to FILE")
    ap.add_argument("--only", action="append", choices=("messages", "files", "bytes"),
                    help="run only these parts (repeatable; default: all), e.g. to profile")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    ap.add_argument("--cache", type=int, default=2048, metavar="MiB",
                    help="creepy's -c (default 2048: 512 MiB of dirty room between syncs)")
    ap.add_argument("--pin", action="store_true",
                    help="run the client on the first CPU and the servers on the others")
    ap.add_argument("--dialect", action="append", choices=DIALECTS, dest="dialects",
                    help="measure only this 9P dialect (repeatable; default: both)")
    ap.add_argument("--runs", type=int, default=3,
                    help="measure every row this many times, servers interleaved; medians "
                         "(default 3)")
    ap.add_argument("--loop", choices=("asyncio", "uvloop"), default=DEFAULT_LOOP,
                    help="creepy's event loop (CREEPY_LOOP; default uvloop when installed)")
    ap.add_argument("--bare-loop", choices=("asyncio", "uvloop"),
                    help="the bare 9P server's event loop (default: creepy's)")
    ap.add_argument("--dirsize", type=int, default=1000,
                    help="entries of the directory read (default 1000)")
    a = ap.parse_args(argv)
    a.bare_loop = a.bare_loop or a.loop
    a.only = a.only or ("messages", "files", "bytes")
    a.dialects = a.dialects or DIALECTS
    cpus = sorted(os.sched_getaffinity(0))
    if a.pin and len(cpus) > 1:
        PIN["client"], PIN["server"] = {cpus[0]}, set(cpus[1:])
        os.sched_setaffinity(0, PIN["client"])
    a.load0 = os.getloadavg()[0]
    if a.profile:
        a.profile = os.path.abspath(a.profile)
    asyncio.run(run(a))


if __name__ == "__main__":
    main()
