#!/usr/bin/env python3
"""Where creepy's time goes, workload by workload.

    python bench/profiles.py                      # about two minutes; prints the tables
    python bench/profiles.py --only wsc16 --top 25   # one workload, a longer profile

For each workload of bench.py (walk+stat+clunk at 1 and 16 in flight, small-file create and
remove, sequential write and read at 8 KiB, 64 KiB and 1 MiB payloads, directory reads) it
measures three things:

1. wire: the workload against `creepy 9pix` over loopback TCP with bench.py's own client
   techniques, and the server's CPU time per unit from /proc (user and system apart);
2. in-process: the same requests, in the same batches as they arrive over the wire, fed to a
   Session over a real Fs and Store (no socket, no event loop between them): what the
   session, the file system and the store cost per unit.  The server's user time on the wire
   minus this is what the event loop and the framing cost;
3. profile: cProfile of the in-process run, the functions with the most time of their own
   (cProfile inflates small functions, so read the shares, not the microseconds).

Units: a message (walk+stat+clunk), a file (create: walk, create, write 1 KiB, clunk;
remove: walk, remove), a MiB (sequential), a directory entry (directory reads).
"""

import argparse
import asyncio
import cProfile
import getpass
import io
import os
import pstats
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

import bench  # noqa: E402
from creepy.fmt import format_disk  # noqa: E402
from creepy.fs.fs import Fs  # noqa: E402
from creepy.ninep import codec  # noqa: E402
from creepy.ninep.codec import (  # noqa: E402
    DMDIR, IOHDRSZ, NOFID, NONUNAME, NOTAG, OREAD, OWRITE, Tattach, TattachL, Tclunk, Tcreate,
    Tgetattr, Tlcreate, Tlopen, Topen, Tread, Treaddir, Tremove, Tstat, Tversion, Twalk,
    Twrite, encode,
)
from creepy.ninep.session import Peer, Session  # noqa: E402
from creepy.ninepix import tune_malloc  # noqa: E402
from creepy.store.disk import Disk  # noqa: E402
from creepy.store.store import Store  # noqa: E402

MIB = 1 << 20
SMALL = bench.SMALL
TCK = os.sysconf("SC_CLK_TCK")
WORKLOADS = ("wsc1", "wsc16", "create", "remove", "seq8k", "seq64k", "seq1m", "dir")
PAYLOADS = {"seq8k": 8 << 10, "seq64k": 64 << 10, "seq1m": MIB}


def cpu(pid):
    """(user, system) CPU seconds of process pid so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) / TCK, int(fields[12]) / TCK


# -- in-process: a Session over a real Fs and Store ------------------------------------------

class Inproc:
    """One session on a fresh disk, fed frames in batches; replies checked, Work run."""

    def __init__(self, work, version, msize):
        path = os.path.join(work, f"inproc-{time.monotonic_ns()}.disk")
        with open(os.devnull, "w") as null:
            format_disk(path, size=2 << 30, out=null)
        # The bench's creepy: -c 2048 (cache 5/8 of it, nodes 1/8).
        self.store = Store.open(Disk(path), cache_bytes=1280 << 20, node_bytes=256 << 20)
        # An event loop of its own, not running between calls: Work runs to completion on it.
        self.loop = asyncio.new_event_loop()

        async def make_fs():
            return Fs(self.store, noauth=True, sync_interval=3600, dirty_limit=512 << 20)

        self.fs = self.loop.run_until_complete(make_fs())
        self.s = Session(self.fs, Peer("inproc!1", None, "tcp"), msize=msize)
        self.version = version
        self.dotl = version == "9P2000.L"
        user = getpass.getuser()
        self.call([encode(Tversion(NOTAG, msize, version))])
        self.call([encode(TattachL(1, 0, NOFID, user, "", NONUNAME) if self.dotl
                          else Tattach(1, 0, NOFID, user, ""))])

    def call(self, frames):
        """Feed frames as one read's worth; returns the replies (a list of frames, but a
        large Rread comes as its header and its payload)."""
        s = self.s
        receive = s.receive
        for f in frames:
            receive(f)
        while s.started:
            started = list(s.started)
            s.started.clear()
            for w in started:
                try:
                    result = self.loop.run_until_complete(w.coro)
                except Exception as e:
                    result = e
                s.complete(w, result)
        out = list(s.out)
        s.out.clear()
        s.out_bytes = 0
        s.out_big = False
        skip = 0
        for part in out:                # no error among the replies
            if skip:
                skip -= 1
            elif part[4] in (7, 107):
                table = codec.NINEP2000L if self.dotl else codec.NINEP2000
                raise SystemExit(f"profiles: {table.decode(bytes(part))}")
            elif int.from_bytes(part[:4], "little") > len(part):
                skip = 1                # a large Rread's payload follows its header
        return out

    def create(self, parent, name, perm, mode, fid, tag=1):
        """Frames: walk fid to parent, create name on it (9P2000.L: Tlcreate; a directory
        through Tcreate's DMDIR is 9P2000 only)."""
        walk = encode(Twalk(tag, 0, fid, [parent] if parent else []))
        if self.dotl:
            return [walk, encode(Tlcreate(tag, fid, name, mode & 3 | 0o200, perm & 0o777, 0))]
        return [walk, encode(Tcreate(tag, fid, name, perm, mode))]

    def close(self):
        self.store.close()
        self.loop.close()

    def run(self, batches, prof=None):
        """Seconds to feed every batch (with prof: under that cProfile)."""
        if prof is not None:
            prof.enable()
        t0 = time.perf_counter()
        for b in batches:
            self.call(b)
        t = time.perf_counter() - t0
        if prof is not None:
            prof.disable()
        return t


def setup_inproc(ip, dirsize):
    """The bench's tree: bench (a small file), cr (empty), dir (dirsize empty files)."""
    tag = 1
    ip.call(ip.create("", "bench", 0o644, OWRITE, 5, tag))
    ip.call([encode(Twrite(tag, 5, 0, b"a small file for walk and stat\n")),
             encode(Tclunk(tag, 5))])
    for d in ("cr", bench.DIRNAME):
        if ip.dotl:
            ip.call([encode(codec.Tmkdir(tag, 0, d, 0o755, 0))])
        else:
            ip.call(ip.create("", d, DMDIR | 0o755, OREAD, 5, tag) + [encode(Tclunk(tag, 5))])
    for i in range(dirsize):
        ip.call(ip.create(bench.DIRNAME, f"entry{i:05}", 0o644, OWRITE, 5, tag)
                + [encode(Tclunk(tag, 5))])


def inproc_batches(ip, name, count, dirsize):
    """(units, batches) of workload name: count units' worth of requests, in the batches in
    which they arrive over the wire."""
    v = ip.version
    if name in ("wsc1", "wsc16"):
        depth = 1 if name == "wsc1" else 16
        cycle = bench.walk_stat_clunk("bench", v)
        lanes = [cycle(i, 1000 + i)[0] for i in range(depth)]
        batches = []
        for _ in range(count // (3 * depth)):
            for step in range(3):
                batches.append([lane[step] for lane in lanes])
        return len(batches) * depth, batches
    if name == "create":
        batches, frames = [], []
        base = time.monotonic_ns()
        for i in range(count):
            t = i % 16
            frames += ip.create("cr", f"f{base}.{i}", 0o644, OWRITE, 2000 + t, t)
            frames += [encode(Twrite(t, 2000 + t, 0, SMALL)), encode(Tclunk(t, 2000 + t))]
            if t == 15:
                batches.append(frames)
                frames = []
        ip.made = [f"f{base}.{i}" for i in range(count)]
        return count, batches + ([frames] if frames else [])
    if name == "remove":
        batches, frames = [], []
        for i, fname in enumerate(ip.made):
            t = i % 16
            frames += [encode(Twalk(t, 0, 3000 + t, ["cr", fname])),
                       encode(Tremove(t, 3000 + t))]
            if t == 15:
                batches.append(frames)
                frames = []
        return len(ip.made), batches + ([frames] if frames else [])
    if name == "dir":
        fid = 4000
        batches = []
        units = 0
        for _ in range(max(1, count // max(dirsize, 1))):
            batches.append([encode(Twalk(1, 0, fid, [bench.DIRNAME]))])
            batches.append([encode(Tlopen(1, fid, 0) if ip.dotl else Topen(1, fid, OREAD))])
            batches.append(("dirread", fid))
            batches.append([encode(Tclunk(1, fid))])
            units += dirsize
        return units, batches
    raise ValueError(name)


def run_dir_reads(ip, batches, prof=None):
    """Directory reads need the previous reply for the next offset: fed one at a time."""
    if prof is not None:
        prof.enable()
    t0 = time.perf_counter()
    unit = ip.s.iounit
    for b in batches:
        if isinstance(b, tuple):
            fid = b[1]
            offset = 0
            while True:
                if ip.dotl:
                    r = ip.call([encode(Treaddir(1, fid, offset, unit))])[0]
                    ents = codec.unpack_dirents(codec.NINEP2000L.decode(bytes(r)).data)
                    if not ents:
                        break
                    offset = ents[-1][1]
                else:
                    r = ip.call([encode(Tread(1, fid, offset, unit))])[0]
                    n = len(r) - 11
                    if n == 0:
                        break
                    offset += n
        else:
            ip.call(b)
    t = time.perf_counter() - t0
    if prof is not None:
        prof.disable()
    return t


def inproc_sequential(ip, payload, data, prof=None):
    """(write seconds, read seconds) of data written then read, WINDOW requests per batch."""
    name = f"seq{payload}.{time.monotonic_ns()}"
    ip.call(ip.create("", name, 0o644, OWRITE, 6, 1))
    offsets = list(range(0, len(data), payload))
    view = memoryview(data)
    w = [encode(Twrite(i % bench.WINDOW, 6, off, view[off:off + payload]))
         for i, off in enumerate(offsets)]
    wb = [w[i:i + bench.WINDOW] for i in range(0, len(w), bench.WINDOW)]
    tw = ip.run(wb, prof)
    ip.call([encode(Tclunk(1, 6)), encode(Twalk(1, 0, 6, [name])),
             encode(Tlopen(1, 6, 0) if ip.dotl else Topen(1, 6, OREAD))])
    r = [encode(Tread(i % bench.WINDOW, 6, off, payload)) for i, off in enumerate(offsets)]
    rb = [r[i:i + bench.WINDOW] for i in range(0, len(r), bench.WINDOW)]
    tr = ip.run(rb, prof)
    # Removed, the file's blocks go: the next transfer reuses their memory, as a server that
    # has run a while does (new memory costs page faults: see bench/README.md).
    ip.call([encode(Tremove(1, 6))])
    return tw, tr


# -- wire: creepy 9pix, bench.py's client techniques, the server's CPU ------------------------

async def sync(addr):
    """Commit everything the server holds dirty (a no-change Twstat of the root)."""
    c = await bench.Client.connect(addr)
    try:
        await c.wstat(c.root, bench.nochange())
    finally:
        await c.close()


async def wire(srv, name, a, data, version):
    """[(label, unit, rate, units measured, user s, system s)] of workload name."""
    pid = srv.p.pid
    out = []

    async def measure(label, unit, coro, units_of):
        u0, s0 = cpu(pid)
        t0 = time.perf_counter()
        rate = await coro
        t = time.perf_counter() - t0
        u1, s1 = cpu(pid)
        out.append((label, unit, rate, units_of(rate, t), u1 - u0, s1 - s0))

    T, W = a.seconds, 0.3
    if name in ("wsc1", "wsc16"):
        depth = 1 if name == "wsc1" else 16
        await measure(f"raw, {depth} in flight", "msg",
                      bench.raw_rate(srv.port, depth, T, W, bench.walk_stat_clunk("bench", version),
                                     version), lambda r, t: r * t)
        await measure(f"Client, {depth} in flight", "msg",
                      bench.client_rate(srv.addr, depth, T, W, "bench", version),
                      lambda r, t: r * t)
    elif name == "create":
        u0, s0 = cpu(pid)
        c, m = await bench.create_remove(srv.addr, 16, T, "cr", version=version)
        u1, s1 = cpu(pid)
        # create_remove times both; the CPU is split by their shares of the files' time
        tc, tm = 1 / c, 1 / m
        n = c * T
        out.append(("create, 16 in flight", "file", c, n, (u1 - u0) * tc / (tc + tm),
                    (s1 - s0) * tc / (tc + tm)))
        out.append(("remove, 16 in flight", "file", m, n, (u1 - u0) * tm / (tc + tm),
                    (s1 - s0) * tm / (tc + tm)))
    elif name in PAYLOADS:
        payload = PAYLOADS[name]
        size = len(data)
        for _ in range(2):      # the second time in memory the first one freed (bench.README)
            await sync(srv.addr)        # (not the committing of the previous transfer)
            u0, s0 = cpu(pid)
            w, _, _, r = await bench.sequential(srv.addr, payload, data,
                                                f"p{payload}.{time.monotonic_ns()}",
                                                verify=False, version=version)
            u1, s1 = cpu(pid)
        tw, tr = size / w, size / r
        mib = size / MIB
        out.append((f"seq write, {payload >> 10} KiB", "MiB", w, mib,
                    (u1 - u0) * tw / (tw + tr), (s1 - s0) * tw / (tw + tr)))
        out.append((f"seq read, {payload >> 10} KiB", "MiB", r, mib,
                    (u1 - u0) * tr / (tw + tr), (s1 - s0) * tr / (tw + tr)))
    elif name == "dir":
        await measure("directory read", "entry", bench.dir_rate(srv.addr, T, W, version),
                      lambda r, t: r * t)
    return out


# -- the run ----------------------------------------------------------------------------------

def top(prof, n):
    """The n functions with the most time of their own: [(share, name)]."""
    st = pstats.Stats(prof, stream=io.StringIO())
    total = sum(v[2] for v in st.stats.values()) or 1
    rows = sorted(st.stats.items(), key=lambda kv: -kv[1][2])[:n]
    out = []
    for (path, line, func), v in rows:
        where = os.path.relpath(path, os.path.dirname(HERE)) if path.startswith("/") else path
        out.append((v[2] / total, f"{func} ({where}:{line})"))
    return out


def run(a):
    tune_malloc()
    work = tempfile.mkdtemp(prefix="creepy-profiles-")
    srv = None
    data = None
    try:
        srv = bench.start_creepy(work, None, 2048, a.loop)
        asyncio.run(bench.setup_tree(srv.addr, a.dirsize))
        size = a.mib * MIB
        if any(w in PAYLOADS for w in a.only):
            data = bytes(range(256)) * (size // 256)
        print(f"creepy profiles: {a.version}, event loop {a.loop}, load average "
              f"{os.getloadavg()[0]:.2f}")
        for name in a.only:
            print(f"\n== {name}")
            rows = asyncio.run(wire(srv, name, a, data, a.version)) if a.wire else []
            print("  wire:        " + "; ".join(
                f"{label}: {rate:,.0f} {unit}{'' if unit == 'MiB' else 's'}/s, server "
                f"{(u + s) / n * 1e6:.1f} us/{unit} (user {u / n * 1e6:.1f}, system "
                f"{s / n * 1e6:.1f})" for label, unit, rate, n, u, s in rows))
            payload = PAYLOADS.get(name)
            ip = Inproc(work, a.version, (payload or 8192) + IOHDRSZ)
            setup_inproc(ip, a.dirsize if name == "dir" else 0)
            prof = cProfile.Profile()
            if payload:
                sdata = data[:min(len(data), 64 * MIB)]
                inproc_sequential(ip, payload, sdata)             # warm the heap: no faults
                tw, tr = inproc_sequential(ip, payload, sdata)
                mib = len(sdata) / MIB
                inproc = [("write", tw / mib, "MiB"), ("read", tr / mib, "MiB")]
                inproc_sequential(ip, payload, sdata, prof)
            elif name == "dir":
                units, batches = inproc_batches(ip, name, 20 * a.dirsize, a.dirsize)
                t = run_dir_reads(ip, batches)
                inproc = [("read", t / units, "entry")]
                run_dir_reads(ip, batches, prof)
            elif name in ("create", "remove"):
                n = a.files
                _, cb = inproc_batches(ip, "create", n, 0)
                tc = ip.run(cb)
                _, rb = inproc_batches(ip, "remove", n, 0)
                tm = ip.run(rb)
                inproc = [("create", tc / n, "file"), ("remove", tm / n, "file")]
                _, cb = inproc_batches(ip, "create", n, 0)
                _, rb = inproc_batches(ip, "remove", n, 0) if name == "remove" else (0, [])
                if name == "remove":
                    ip.run(cb)
                    ip.run(rb, prof)
                else:
                    ip.run(cb, prof)
                    ip.run(inproc_batches(ip, "remove", n, 0)[1])
            else:
                units, batches = inproc_batches(ip, name, a.messages, 0)
                ip.run(batches[:len(batches) // 10])                # warm up
                t = ip.run(batches)
                inproc = [("session + fs", t / units, "msg")]
                ip.run(batches, prof)
            ip.close()
            print("  in-process:  " + "; ".join(f"{label} {sec * 1e6:.1f} us/{unit}"
                                                for label, sec, unit in inproc))
            for share, func in top(prof, a.top):
                print(f"    {share * 100:5.1f}%  {func}")
    finally:
        if srv is not None:
            srv.stop()
        shutil.rmtree(work, ignore_errors=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", action="append", choices=WORKLOADS,
                    help="profile only this workload (repeatable; default: all)")
    ap.add_argument("--version", choices=bench.DIALECTS, default="9P2000")
    ap.add_argument("--loop", choices=("asyncio", "uvloop"), default=bench.DEFAULT_LOOP,
                    help="creepy's event loop (default uvloop when installed)")
    ap.add_argument("--seconds", type=float, default=2.0, help="time per wire rate")
    ap.add_argument("--mib", type=int, default=256, help="MiB of a sequential transfer")
    ap.add_argument("--messages", type=int, default=48000,
                    help="requests of an in-process message workload")
    ap.add_argument("--files", type=int, default=4000, help="files of in-process create")
    ap.add_argument("--dirsize", type=int, default=1000)
    ap.add_argument("--top", type=int, default=8, help="functions listed per profile")
    ap.add_argument("--no-wire", dest="wire", action="store_false",
                    help="only the in-process measurements and profiles")
    a = ap.parse_args(argv)
    a.only = a.only or WORKLOADS
    run(a)


if __name__ == "__main__":
    main()
