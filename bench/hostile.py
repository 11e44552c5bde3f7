"""Careless and hostile clients: does the server's memory stay bounded, and everyone else served?

    python bench/hostile.py [--only NAME,...] [--runs R] [--cycles N] [--hold S]

Each scenario starts a `creepy 9pix -c 64` of its own on a fresh disk (a real subprocess),
lets another client's Tstat loop (its own process and connection, one request at a time) run
for a second, takes the server's start-up RSS, then attacks, and reads the server's peak RSS
(VmHWM of /proc/PID/status) while the attack still holds what it made the server keep.  The
bound is -c + the start-up RSS + an allowance for each connection:

    2 x (F + 64 KiB) + 64 KiB     any connection: its receive buffer holds at most two frames'
                                  worth of its largest frame F (64 KiB at least), plus its
                                  objects (session, transport, fids)
    + 8 MiB + msize               a connection whose client does not read its replies: what
                                  may wait for it to read (the server's max_unsent, and the
                                  reply that crossed it)

    + 8 MiB + F                   a connection whose requests wait (console lines queued
                                  behind others): the frames of its requests in flight (the
                                  server's max_pending, and the frame that crossed it)
    + 256 x 8 KiB                 a connection with console reads waiting for output: what
                                  those complete with, past max_unsent (console.MAXREAD each)

and, once for the server, 32 MiB: the buffers of large frames allocated whole before they
arrived (the server's max_ahead, shared by every connection).

The scenarios (the shapes of issue 8's findings):

churn          N (50,000) cycles of create, write 64 KiB, remove on one connection, 16 in
               flight; removed four ways in turn: Tremove; ORCLOSE and Tclunk; renamed onto
               another file (which goes); truncated by Twstat, then removed
unread         4 connections whose clients never read their sockets each send 1,000 Treads of
               1 MiB of a synced 1 MiB file
half-frame     1,000 connections each send a size field announcing a 1 MiB frame and one more
               byte, then (once all are connected) another byte, and stop (before Tversion);
               with -n 2000, and with the default -n (512)
half-frame-v   the same after a Tversion of msize 1 MiB + 24 (a frame that large is allowed)
console        4 clients write 1 MiB console lines (50 each, as one Twrite, and as 16 of 64 KiB);
               2 more write 1 MiB of short lines (`who` and comments: 419,428 lines a write),
               12 writes at once, twice; 2 clients hold /cons open for reading and never read it,
               2 more send 200 Treads of 1 MiB on it and never read their sockets

The table shows, for each scenario, the worst of R runs (default 1; run it with --runs 3 on a
busy machine): start-up RSS, peak RSS, the bound and PASS or MISS, and the stat loop's p50,
p99 and worst round trip while the attack ran (target: p99 under 100 ms).  Progress goes to
stderr.  Nothing here is a test: it runs by hand.
"""

import argparse
import asyncio
import os
import socket
import struct
import sys
import tempfile
import time

from harness import MiB, Served, StatLoop, percentiles, vm   # and the repository on sys.path
from creepy.ninep import codec                                # noqa: E402
from creepy.ninep.client import Client, Error9P               # noqa: E402
from creepy.ninep.codec import NOFID, NOTAG, OREAD, ORCLOSE, OWRITE   # noqa: E402

KiB = 1 << 10
CACHE_MIB = 64
MSIZE = MiB + codec.IOHDRSZ
MAX_UNSENT = 8 * MiB            # creepy.ninep.server.DEFAULT_MAX_UNSENT
MAX_PENDING = 8 * MiB           # creepy.ninep.server.DEFAULT_MAX_PENDING
MAX_AHEAD = 32 * MiB            # creepy.ninep.server.DEFAULT_MAX_AHEAD
CONS_READS = 256 * 8 * KiB      # max_tags reads of console.MAXREAD
P99_TARGET = 0.100


def allowance(frame=0, unread=False, pending=False, cons_reads=False):
    """What one connection may cost (the module docstring)."""
    a = 2 * (max(frame, 64 * KiB) + 64 * KiB) + 64 * KiB
    return (a + (MAX_UNSENT + MSIZE if unread else 0) + (MAX_PENDING + frame if pending else 0)
            + (CONS_READS if cons_reads else 0))


def say(what):
    print(f"  {time.strftime('%H:%M:%S')} {what}", file=sys.stderr, flush=True)


# -- raw connections ----------------------------------------------------------------------------

def raw_conn(port, rcvbuf=None):
    """A blocking socket to the server; rcvbuf: a small receive buffer (a client that will
    not read leaves the server little room in the kernel)."""
    s = socket.socket()
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(30)
    s.connect(("127.0.0.1", port))
    return s


def unread_opener(port, aname, path, uname):
    """A connection with path open for reading on fid 1, the replies so far unread (they are
    small and the server wrote them); the caller sends its Treads and never reads."""
    s = raw_conn(port, rcvbuf=4096)
    s.sendall(codec.encode(codec.Tversion(NOTAG, MSIZE, "9P2000"))
              + codec.encode(codec.Tattach(1, 0, NOFID, uname, aname))
              + codec.encode(codec.Twalk(2, 0, 1, path.split("/")))
              + codec.encode(codec.Topen(3, 1, OREAD)))
    return s


def send_treads(s, n, count=MiB, first_tag=10):
    s.sendall(b"".join(codec.encode(codec.Tread(first_tag + i, 1, 0, count)) for i in range(n)))


def state(s):
    """'open', 'closed' (the server hung up) or 'refused' (an Rerror, then the hang-up)."""
    s.setblocking(False)
    try:
        data = s.recv(1 << 16)
    except BlockingIOError:
        return "open"
    except OSError:
        return "closed"
    if not data:
        return "closed"
    return "refused" if data[4] == codec.Rerror.type else "open"


async def treads_handled(c):
    """The server's count of Treads so far, from /stats."""
    text = (await c.read_file("stats")).decode()
    for line in text.splitlines():
        if line.startswith("Tread"):
            return int(line.split("\t")[1].split()[0])
    return 0


async def until_steady(c, limit=60):
    """Wait until the server stops handling Treads but ours (reading /stats takes two or three
    of them), at most limit seconds."""
    last, t_end = -10, time.monotonic() + limit
    while time.monotonic() < t_end:
        n = await treads_handled(c)
        if n - last <= 3:
            return n
        last = n
        await asyncio.sleep(1)
    return last


# -- the scenarios ------------------------------------------------------------------------------

async def churn(srv, a):
    c = await Client.connect(srv.addr, aname="")
    data = os.urandom(64 * KiB)
    done = 0

    async def worker(k):
        nonlocal done
        for i in range(k, a.cycles, 16):
            done += 1
            if done % 10000 == 0:
                say(f"{done} cycles")
            name = f"churn{i}"
            f = await c.walkpath("")
            way = i % 4
            await c.create(f, name, 0o644, OWRITE | (ORCLOSE if way == 1 else 0))
            await c.write(f, 0, data)
            if way == 0:                # Tremove
                await c.remove(f)
                continue
            await c.clunk(f)            # way 1: that removes it (ORCLOSE)
            if way == 2:                # renamed onto the last one, which goes
                await c.rename(name, f"victim{k}")
            elif way == 3:              # truncated, then removed
                await c.truncate(name, 0)
                await c.remove_path(name)
    await asyncio.gather(*(worker(k) for k in range(16)))
    left = sorted(s.name for s in await c.listdir(""))
    for name in left:
        await c.remove_path(name)
    await c.close()
    assert left == sorted(f"victim{k}" for k in range(min(16, a.cycles)) if k % 4 == 2), left
    return dict(conns=[(1, allowance(64 * KiB + codec.IOHDRSZ))],
                note=f"{a.cycles} cycles")


async def unread(srv, a):
    c = await Client.connect(srv.addr, aname="main")
    await c.write_file("root/f", os.urandom(MiB))
    await c.cons("sync")
    uname = srv.uname
    before = await treads_handled(c)
    socks = [unread_opener(srv.port, "", "f", uname) for _ in range(4)]
    for s in socks:
        send_treads(s, 1000)
    handled = await until_steady(c) - before
    say(f"{handled} of 4,000 Treads handled; holding {a.hold} s")
    await asyncio.sleep(a.hold)
    handled = await treads_handled(c) - before
    await c.close()
    srv.hold = lambda: [s.close() for s in socks]
    return dict(conns=[(4, allowance(unread=True)), (1, allowance())],
                note=f"{handled} of 4,000 Treads handled")


def half_frame(after_version):
    async def attack(srv, a):
        head = struct.pack("<I", MiB) + b"x"
        socks = []
        refused = 0
        for i in range(a.conns):
            s = raw_conn(srv.port)
            if after_version:
                s.sendall(codec.encode(codec.Tversion(NOTAG, MSIZE, "9P2000")))
                r = s.recv(64)
                if r[4] != codec.Rversion.type:
                    refused += 1
                    s.close()
                    continue
            try:
                s.sendall(head)
            except OSError:
                pass
            socks.append(s)
        for s in socks:         # one more byte: the frame goes on, slowly
            try:
                s.sendall(b"y")
            except OSError:
                pass
        await asyncio.sleep(a.hold)
        states = [state(s) for s in socks]
        srv.hold = lambda: [s.close() for s in socks]
        counts = {k: states.count(k) for k in ("open", "closed", "refused")}
        counts["refused"] += refused
        note = ", ".join(f"{v} {k}" for k, v in counts.items() if v)
        # The allowance is for the connections the server holds; those it closed cost it
        # nothing once closed.
        return dict(conns=[(counts["open"], allowance())], note=note)
    return attack


async def console(srv, a):
    line = b"x" * (MiB - 1) + b"\n"
    lines = b"who\n#\n#\n#\n" * (MiB // 10)      # 1 MiB, 419,428 lines
    refused = ran = 0

    async def open_cons(mode):
        c = await Client.connect(srv.addr, aname="main")
        f = await c.walkpath("cons")
        await c.open(f, mode)
        return c, f

    async def long_lines():
        nonlocal refused
        c, f = await open_cons(OWRITE)
        for i in range(50):
            for piece in ([line] if i & 1 else
                          [line[k:k + 64 * KiB] for k in range(0, MiB, 64 * KiB)]):
                try:
                    await c.write(f, 0, piece)
                except Error9P:
                    refused += 1
        await c.close()

    async def many_lines():
        nonlocal ran
        c, f = await open_cons(OWRITE)
        for _ in range(2):
            await asyncio.gather(*(c.write(f, 0, lines) for _ in range(12)))
            ran += 12 * lines.count(b"\n")
        await c.close()

    idle = [await open_cons(OREAD) for _ in range(2)]
    socks = [unread_opener(srv.port, "main", "cons", srv.uname) for _ in range(2)]
    for s in socks:
        send_treads(s, 200)
    await asyncio.gather(*(long_lines() for _ in range(4)), *(many_lines() for _ in range(2)))
    for c, _ in idle:
        await c.close()
    srv.hold = lambda: [s.close() for s in socks]
    frame = MiB + codec.IOHDRSZ
    return dict(conns=[(4, allowance(frame)), (2, allowance(frame, pending=True)),
                       (2, allowance()), (2, allowance(unread=True, cons_reads=True))],
                extra=MiB,      # the console's output, shared by its readers (MAXLOG)
                note=f"{refused} writes of long lines refused, {ran} short lines run")


SCENARIOS = {
    "churn": ([], churn),
    "unread": ([], unread),
    "half-frame": (["-n", "2000"], half_frame(False)),
    "half-frame -n 512": ([], half_frame(False)),
    "half-frame-v": (["-n", "2000"], half_frame(True)),
    "half-frame-v -n 512": ([], half_frame(True)),
    "console": ([], console),
}


# -- a run --------------------------------------------------------------------------------------

def run(name, a):
    flags, attack = SCENARIOS[name]
    with tempfile.TemporaryDirectory(dir=a.d) as tmp:
        srv = Served(tmp, ["-c", str(CACHE_MIB), *flags])
        srv.uname = os.environ.get("USER") or "bench"
        srv.hold = lambda: None
        loop = StatLoop(srv.port)
        try:
            time.sleep(1)
            start_rss = vm(srv.pid, "VmRSS")
            start_hwm = vm(srv.pid, "VmHWM")
            t0 = time.monotonic()
            r = asyncio.run(attack(srv, a))
            t1 = time.monotonic()
            peak = vm(srv.pid, "VmHWM")
            rss = vm(srv.pid, "VmRSS")
            srv.hold()
        finally:
            samples, error = loop.stop()
            status = srv.stop()
    if error:
        raise SystemExit(f"{name}: the stat loop ended early: {error}")
    if status != 0:
        raise SystemExit(f"{name}: 9pix exited with status {status}:\n" + "".join(srv.lines))
    conns = sum(n for n, _ in r["conns"]) + 1           # and the stat loop's
    allowed = (sum(n * each for n, each in r["conns"]) + allowance() + MAX_AHEAD
               + r.get("extra", 0))
    base = max(start_rss, start_hwm)
    bound = CACHE_MIB * MiB + base + allowed
    n, p50, p99, mx = percentiles(samples, t0, t1)
    return dict(name=name, seconds=t1 - t0, start=base, peak=peak, rss=rss, bound=bound,
                conns=conns, allowed=allowed, stats=n, p50=p50, p99=p99, max=mx,
                note=r["note"])


def worst(runs):
    w = dict(runs[0])
    for r in runs[1:]:
        for k in ("peak", "rss", "p50", "p99", "max", "seconds"):
            w[k] = max(w[k], r[k])
        w["start"] = min(w["start"], r["start"])
        w["bound"] = min(w["bound"], r["bound"])
    w["notes"] = [r["note"] for r in runs]
    return w


def table(rows, a):
    print(f"creepy 9pix -c {CACHE_MIB} under hostile clients: worst of {a.runs} run(s); "
          f"RSS in MiB, stat loop round trips in ms")
    head = (f"{'scenario':<21}{'secs':>6}{'conns':>6}{'start':>7}{'allow':>7}{'bound':>7}"
            f"{'peak':>7}{'end':>7}{'RSS':>6}{'stats':>8}{'p50':>7}{'p99':>7}{'max':>8}"
            f"{'p99':>6}")
    print(head)
    for r in rows:
        ok = "PASS" if r["peak"] <= r["bound"] else "MISS"
        lat = "PASS" if r["p99"] < P99_TARGET else "MISS"
        print(f"{r['name']:<21}{r['seconds']:>6.0f}{r['conns']:>6}{r['start'] / MiB:>7.1f}"
              f"{r['allowed'] / MiB:>7.1f}{r['bound'] / MiB:>7.1f}{r['peak'] / MiB:>7.1f}"
              f"{r['rss'] / MiB:>7.1f}{ok:>6}{r['stats']:>8}{r['p50'] * 1e3:>7.2f}"
              f"{r['p99'] * 1e3:>7.2f}{r['max'] * 1e3:>8.1f}{lat:>6}")
    print("start: RSS after start-up (VmHWM by then); allow: the connections' allowance; "
          "bound: -c + start + allow; peak: VmHWM; end: VmRSS when the attack ended")
    for r in rows:
        print(f"  {r['name']}: {'; '.join(r['notes'])}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", help="comma-separated scenario names (default: all): "
                                   + ", ".join(SCENARIOS))
    ap.add_argument("--runs", type=int, default=1, help="runs of each scenario; the worst shows")
    ap.add_argument("--cycles", type=int, default=50_000, help="churn's create/write/remove cycles")
    ap.add_argument("--conns", type=int, default=1000, help="half-frame's connections")
    ap.add_argument("--hold", type=float, default=3.0,
                    help="seconds an attack holds what it made the server keep")
    ap.add_argument("-d", default=None, help="directory for the disks (default: a temporary one)")
    a = ap.parse_args()
    names = a.only.split(",") if a.only else list(SCENARIOS)
    for name in names:
        if name not in SCENARIOS:
            ap.error(f"no scenario {name!r}")
    print(f"load average before: {os.getloadavg()[0]:.2f}", file=sys.stderr)
    rows = []
    for name in names:
        runs = []
        for i in range(a.runs):
            say(f"{name}: run {i + 1} of {a.runs}")
            runs.append(run(name, a))
        rows.append(worst(runs))
    print(f"load average after: {os.getloadavg()[0]:.2f}", file=sys.stderr)
    table(rows, a)


if __name__ == "__main__":
    main()
