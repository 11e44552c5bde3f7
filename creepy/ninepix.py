"""creepy 9pix (and creepy rip): the file server program.

    creepy 9pix [-ra] [-c MiB] [-A addr]... [-S srv] [-i secs] [disk]
    creepy rip  [-a]  [-c MiB] [-A addr]... [-S srv] disk

It opens the disk, builds the tree (fs) and serves it over 9P (ninep.server) on TCP and on a Unix
socket posted in the plan9port name space directory.  Without -A and -S it listens on loopback
TCP (port 564 as root, else 5640 for 9pix and 5641 for rip) and posts "9pix" (or "rip"); giving
either flag serves only what the flags name.  Without -a, Unix-socket clients are authenticated
by their peer credentials and TCP attaches are refused; -a is refused on an address beyond
loopback, so an unauthenticated tree is never exposed to the network.

With no disk, 9pix serves $XDG_DATA_HOME/creepy/main.disk (~/.local/share/...), formatting a
1 GiB sparse file there the first time.  SIGTERM and SIGINT sync before exiting.
"""

import argparse
import asyncio
import os
import signal
import sys
import time

from creepy.errors import NotCreepy
from creepy.fmt import format_disk
from creepy.fs.fs import Fs
from creepy.ninep import dial
from creepy.ninep.server import Server
from creepy.store.disk import Disk
from creepy.store.store import Store


def default_disk():
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local",
                                                           "share")
    return os.path.join(base, "creepy", "main.disk")


def default_cache():
    try:
        phys = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        phys = 4 << 30
    return max(64 << 20, min(phys // 8, 2 << 30))


def log(msg):
    print(f"creepy {time.strftime('%H:%M:%S')} {msg}", file=sys.stderr, flush=True)


def parser(prog, worm):
    ap = argparse.ArgumentParser(prog=prog, description=(
        "serve a WORM disk read-only (attach wormwr to write)" if worm else
        "serve a creepy disk over 9P2000"))
    if not worm:
        ap.add_argument("-r", action="store_true", help="read-only")
    ap.add_argument("-a", action="store_true",
                    help="no authentication (loopback addresses only)")
    ap.add_argument("-c", type=int, metavar="MiB", help="block cache size in MiB")
    ap.add_argument("-A", action="append", metavar="addr", default=[],
                    help="listen on a dial string: tcp!host!port, host:port (repeatable)")
    ap.add_argument("-S", metavar="srv", help="post a Unix socket of this name in the name "
                                              "space directory (or at a path with a '/')")
    ap.add_argument("-i", type=float, default=5.0, metavar="secs",
                    help="sync every secs seconds while the tree is dirty (default 5)")
    ap.add_argument("-m", type=int, default=(1 << 20) + 24, metavar="msize",
                    help="largest 9P message offered (default 1 MiB + 24)")
    ap.add_argument("disk", nargs=None if worm else "?")
    return ap


def main(argv=None, worm=False):
    prog = "creepy rip" if worm else "creepy 9pix"
    a = parser(prog, worm).parse_args(argv)
    path = a.disk
    if path is None:
        path = default_disk()
        if not os.path.exists(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            format_disk(path, out=sys.stderr)
    addrs, srv = listen_plan(a, worm)
    if a.a:
        for addr in addrs:
            if not dial.is_loopback(addr):
                raise SystemExit(f"{prog}: refusing -a on {addr}: an unauthenticated tree is "
                                 f"served on loopback only")
    # -c caps the memory of the tree's blocks: 5/8 for clean blocks, 1/4 for dirty ones
    # (past it a sync is forced), 1/8 for loaded file and directory nodes.
    budget = (a.c << 20) if a.c else default_cache()
    try:
        disk = Disk(path, readonly=getattr(a, "r", False))
        store = Store.open(disk, cache_bytes=budget * 5 // 8, node_bytes=budget // 8,
                           readonly=getattr(a, "r", False))
    except (OSError, ValueError, NotCreepy) as e:
        raise SystemExit(f"{prog}: {path}: {e}")
    if worm and store.kind != "worm":
        raise SystemExit(f"{prog}: {path} is a main disk; serve it with creepy 9pix")
    if not worm and store.kind == "worm":
        raise SystemExit(f"{prog}: {path} is a WORM disk; serve it with creepy rip")
    try:
        asyncio.run(serve(store, addrs, srv, a, worm, budget))
    except KeyboardInterrupt:
        pass
    return 0


def listen_plan(a, worm):
    if a.A or a.S:
        return a.A, a.S
    port = 564 if os.geteuid() == 0 else (5641 if worm else 5640)
    return [f"tcp!127.0.0.1!{port}"], ("rip" if worm else "9pix")


async def serve(store, addrs, srv, a, worm, budget):
    fs = Fs(store, noauth=a.a, readonly=getattr(a, "r", False), sync_interval=a.i,
            dirty_limit=budget // 4, log=log)
    server = Server(fs, msize=a.m)
    fs.stats_sources.append(lambda: server_stats(server))
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    fs.on_halt = done.set
    listeners = []
    for addr in addrs:
        ad = dial.parse(addr)
        if ad.kind == "tcp":
            host = None if ad.host in ("*", "") else ad.host
            listeners.append(await server.listen_tcp(host, ad.port))
            log(f"listening on tcp!{ad.host}!{ad.port}")
        else:
            listeners.append(await server.listen_unix(ad.path))
            log(f"listening on unix!{ad.path}")
    posted = None
    if srv:
        if "/" in srv:
            posted = srv
        else:
            dial.ensure_namespace_dir()
            posted = dial.service_path(srv)
        await server.listen_unix(posted)
        log(f"posted {posted}")
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda s=sig: loop.create_task(_stop(fs, done, s)))
    fs.start()
    log(f"serving {store.kind} disk {store.disk.path}: era {store.committed_era}, "
        f"{store.log.avail} blocks free, {'no auth' if a.a else 'peer-credential auth'}")
    try:
        await done.wait()
    finally:
        await server.close()
        if posted and os.path.exists(posted):
            try:
                os.unlink(posted)
            except OSError:
                pass
        store.close()
        log("halted")


async def _stop(fs, done, sig):
    log(f"signal {signal.Signals(sig).name}: syncing")
    try:
        await fs.halt()
    except Exception as e:
        log(f"sync before exit failed: {e}")
    done.set()


def server_stats(server):
    lines = []
    for name, (count, total) in sorted(server.stats.items()):
        if count:
            lines.append(f"{name:<9}\t{count} calls\t{total / count * 1e6:.1f} µs per call")
    return lines
