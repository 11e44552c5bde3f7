"""creepy 9pix (and creepy rip): the file server program.

    creepy 9pix [-ra] [-c MiB] [-A addr]... [-S srv] [-i secs] [-n conns] [disk]
    creepy rip  [-a]  [-c MiB] [-A addr]... [-S srv] [-n conns] disk

It opens the disk, builds the tree (fs) and serves it over 9P (ninep.server) on TCP and on a Unix
socket posted in the plan9port name space directory.  Without -A and -S it listens on loopback
TCP (9pix: port 564 as root, else 5640; rip: 5641, so the two run side by side as any user)
and posts "9pix" (or "rip"); giving either flag serves only what the flags name.  Without -a,
Unix-socket clients are authenticated by their peer credentials and TCP attaches are refused;
-a is refused on an address beyond loopback (and on a host name that resolves to one), so an
unauthenticated tree is never exposed to the network.  A flag value that cannot be used is one
line on stderr and exit status 2.

With no disk, 9pix serves $XDG_DATA_HOME/creepy/main.disk (~/.local/share/...), formatting a
1 GiB sparse file there the first time.  SIGTERM and SIGINT sync before exiting.

9pix also archives its tree into rip every day: the console's `arch` commands run
`creepy arch` as a child and serve it blocks of a pinned commit (Archival, docs/arch.md).
"""

import argparse
import asyncio
import datetime
import json
import logging
import math
import os
import resource
import signal
import socket
import sys
import threading
import time
import traceback

from creepy import arch as archproto
from creepy.errors import DiskDamaged, FsError, NotCreepy
from creepy.fmt import format_disk
from creepy.fs.fs import Fs
from creepy.ninep import dial
from creepy.ninep.server import DEFAULT_MAX_CONNS, MIN_MSIZE, Server
from creepy.store.disk import Disk
from creepy.store.store import Store
from creepy.store.sweep import entry_root


DIRTY_MAX = 512 << 20
#: environment variable naming the event loop: asyncio or uvloop (see loop_factory)
LOOP_ENV = "CREEPY_LOOP"
#: descriptors kept free of connections: the disk, listeners, the event loop, arch's pipes,
#: and the connections accepted in one go past the cap, each open until its refusal is sent
FD_RESERVE = 256


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


def tune_malloc(budget=0):
    """Keep freed memory for reuse instead of returning it to the kernel.  The server frees and
    allocates block-sized buffers and 1 MiB messages all the time; glibc gives a freed heap top
    back and serves large buffers by mmap, and the next ones fault their pages in again (about
    9 us a 16 KiB block on a VM, against 0.8 us when reused).  Up to half of budget (-c, in
    bytes), at least 256 MiB, stays for reuse: the dirty share of -c (a quarter) and as much
    again of frames received and replies on their way.  With 256 MiB whatever the budget, a
    client writing 256 MiB of 1 MiB Twrites again and again into a -c 2048 server had its
    frames' pages faulted in anew on every other pass (1.3 against 2.8 GB/s).  Elsewhere than
    glibc this does nothing."""
    try:
        import ctypes
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
        mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
        # M_TRIM_THRESHOLD: the free heap top kept (an int: 2 GiB at most; passed unclamped,
        # -c 8192 wrapped to 0 and had every free trimmed)
        mallopt(-1, min(max(256 << 20, budget // 2), 2**31 - 1))
        mallopt(-3, 32 << 20)              # M_MMAP_THRESHOLD: messages come from the heap
    except (OSError, AttributeError):
        pass


def log(msg):
    print(f"creepy {time.strftime('%H:%M:%S')} {msg}", file=sys.stderr, flush=True)


def fit_connections(n):
    """How many connections at once the limit on open files allows, at most n: the soft limit
    (RLIMIT_NOFILE) is raised, up to the hard one, to n + FD_RESERVE; if even the hard one is
    lower, fewer connections are served and the log says so.  Past the limit a connection
    would not be refused clearly: accept(2) would fail with EMFILE and leave it waiting."""
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (OSError, ValueError):
        return n
    want = n + FD_RESERVE
    if soft == resource.RLIM_INFINITY or soft >= want:
        return n
    raised = want if hard == resource.RLIM_INFINITY else min(want, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
        soft = raised
    except (OSError, ValueError):
        pass
    if soft >= want:
        return n
    fit = max(1, soft - FD_RESERVE)
    log(f"WARNING: the limit on open files ({soft}) leaves room for {fit} connections, not "
        f"{n}; more are refused")
    return fit


class _LoopErrors:
    """The event loop's exception handler.  An OSError the loop meets outside any request
    (accept(2) failing with EMFILE or ENFILE: the loop retries a second later by itself) is
    one line, at most once a second for the same message; anything else is a bug and keeps
    its traceback."""

    def __init__(self):
        self.last = {}          # message -> (when it was logged, how many since)

    def __call__(self, loop, context):
        exc = context.get("exception")
        msg = context.get("message", "event loop error")
        if not isinstance(exc, OSError):
            loop.default_exception_handler(context)
            return
        now = time.monotonic()
        when, since = self.last.get(msg, (None, 0))
        if when is not None and now - when < 1.0:
            self.last[msg] = (when, since + 1)
            return
        more = f" (and {since} more in the last second)" if since else ""
        self.last[msg] = (now, 0)
        log(f"{msg}: {exc.strerror or exc}{more}")


class _LogHandler(logging.Handler):
    """The service layer's log in the same shape as ours.  An error carrying a Plan 9 string is
    a refusal, not a bug (a users file refused when the connection that wrote it vanished
    before its Tclunk): one line.  Anything else keeps its traceback, to be fixed."""

    def emit(self, record):
        msg = record.getMessage()
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and isinstance(getattr(exc, "ename", None), str):
            msg = f"{msg}: {exc.ename}"
        elif exc is not None:
            msg = f"{msg}\n{''.join(traceback.format_exception(exc)).rstrip()}"
        log(msg)


def route_server_log():
    lg = logging.getLogger("creepy.ninep.server")
    if not any(isinstance(h, _LogHandler) for h in lg.handlers):
        lg.addHandler(_LogHandler())
        lg.propagate = False


class UsageError(Exception):
    """A flag whose value cannot be used: one line on stderr and exit status 2, like argparse's
    own errors (every -A and -S value that cannot be parsed, vouched for, or listened on)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(message)


def parser(prog, worm):
    ap = _Parser(prog=prog, description=(
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
    ap.add_argument("-n", type=_positive, default=DEFAULT_MAX_CONNS, metavar="conns",
                    help=f"most client connections at once; more are refused "
                         f"(default {DEFAULT_MAX_CONNS})")
    ap.add_argument("disk", nargs=None if worm else "?")
    return ap


def _positive(text):
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"not a positive number: {text!r}")
    return n


def main(argv=None, worm=False):
    prog = "creepy rip" if worm else "creepy 9pix"
    try:
        return _main(prog, argv, worm)
    except UsageError as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 2


def _main(prog, argv, worm):
    a = parser(prog, worm).parse_args(argv)
    check_values(a)
    factory = loop_factory()
    addrs, srv = listen_plan(a, worm)
    path = a.disk
    if path is None:
        path = default_disk()
        if not os.path.exists(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            format_disk(path, out=sys.stderr)
    # -c caps the memory of the tree's blocks: 5/8 for clean blocks, 1/4 for dirty ones
    # (past it a sync is forced), 1/8 for loaded file and directory nodes.
    budget = (a.c << 20) if a.c else default_cache()
    try:
        disk = Disk(path, readonly=getattr(a, "r", False))
        store = Store.open(disk, cache_bytes=budget * 5 // 8, node_bytes=budget // 8,
                           readonly=getattr(a, "r", False))
    except (OSError, ValueError, NotCreepy, DiskDamaged, FsError) as e:
        raise SystemExit(f"{prog}: {path}: {_why(e)}")
    for w in store.warnings:
        log(f"WARNING: {path}: {w}")
    if worm and store.kind != "worm":
        raise SystemExit(f"{prog}: {path} is a main disk; serve it with creepy 9pix")
    if not worm and store.kind == "worm":
        raise SystemExit(f"{prog}: {path} is a WORM disk; serve it with creepy rip")
    tune_malloc(budget)
    try:
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(serve(store, addrs, srv, a, worm, budget))
    except KeyboardInterrupt:
        pass
    return 0


def loop_factory(choice=None):
    """The event loop the server runs on: uvloop's when it is installed, else asyncio's own.

    uvloop (libuv under asyncio's interface) takes the event loop's share of every request
    down (docs/design.md, "Speed").  CREEPY_LOOP=asyncio in the environment
    (or choice) picks asyncio's loop even so; CREEPY_LOOP=uvloop insists on uvloop and fails
    (UsageError) without it.  Returns a callable for asyncio.Runner, None for asyncio's
    default."""
    choice = choice or os.environ.get(LOOP_ENV, "")
    if choice not in ("", "asyncio", "uvloop"):
        raise UsageError(f"{LOOP_ENV}={choice}: want asyncio or uvloop")
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise UsageError(f"{LOOP_ENV}=uvloop: uvloop is not installed") from None
        return None
    return uvloop.new_event_loop


def loop_name(loop):
    """uvloop or asyncio: which event loop loop is."""
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"


def check_values(a):
    """UsageError for a number flag out of its range (argparse checked that it is a number)."""
    if a.c is not None and a.c < 1:
        raise UsageError(f"-c {a.c}: want at least 1 MiB")
    if not (math.isfinite(a.i) and a.i > 0):
        raise UsageError(f"-i {a.i}: want a number of seconds above 0")
    if not MIN_MSIZE <= a.m <= 0xFFFFFFFF:
        raise UsageError(f"-m {a.m}: want {MIN_MSIZE} to {0xFFFFFFFF} bytes")


def listen_plan(a, worm):
    """Where to listen: (list of dial.Address, path of the socket to post or None).

    Every -A is parsed, with -a it must be loopback (dial.is_loopback), and -S becomes a path
    (a name is posted in the name space directory, made if missing); UsageError says what is
    wrong with the first value that will not do.  Without -A and -S: loopback TCP (9pix: 564
    as root, else 5640; rip: 5641 always, so that a root 9pix and its rip do not collide)
    and the name 9pix (or rip)."""
    texts, srv = a.A, a.S
    if not texts and srv is None:
        port = 5641 if worm else 564 if os.geteuid() == 0 else 5640
        texts, srv = [f"tcp!127.0.0.1!{port}"], ("rip" if worm else "9pix")
    addrs = []
    for text in texts:
        try:
            ad = dial.parse(text)
        except ValueError as e:
            raise UsageError(f"-A: {e}") from None
        if a.a and not dial.is_loopback(ad):
            raise UsageError(f"refusing -a on {text}: an unauthenticated tree is served on "
                             f"loopback only")
        if ad.kind == "unix" and os.path.dirname(ad.path) == dial.namespace_dir():
            _namespace(text)
        addrs.append(ad)
    posted = None
    if srv is not None:
        if not srv or "\0" in srv:
            raise UsageError(f"-S {srv!r}: want a name or a path")
        posted = srv if "/" in srv else os.path.join(_namespace(f"-S {srv}"), srv)
    return addrs, posted


def _namespace(what):
    try:
        return dial.ensure_namespace_dir()
    except OSError as e:
        raise UsageError(f"{what}: {e}") from None


async def listen(server, addrs, posted, noauth):
    """Listen on every address and post the socket; the lines to log once all are up.
    UsageError for the first that fails: the host does not resolve, the address cannot be
    bound, the path cannot be made a socket.  With -a a host name must resolve to loopback
    addresses only, and exactly those are bound (DNS may say anything)."""
    said = []
    for ad in addrs:
        try:
            if ad.kind == "tcp":
                srv = await server.listen_tcp(await _bind_hosts(ad, noauth), ad.port)
                port = srv.sockets[0].getsockname()[1] if srv.sockets else ad.port
                said.append(f"listening on tcp!{ad.host}!{port}")
            else:
                await server.listen_unix(ad.path)
                said.append(f"listening on unix!{ad.path}")
        except UsageError:
            raise
        except (OSError, ValueError) as e:      # UnicodeError (a bad name) is a ValueError
            raise UsageError(f"cannot listen on {ad.dialstring()}: {_why(e)}") from None
    if posted:
        try:
            await server.listen_unix(posted)
        except (OSError, ValueError) as e:
            raise UsageError(f"cannot post {posted}: {_why(e)}") from None
        said.append(f"posted {posted}")
    return said


async def _bind_hosts(ad, noauth):
    if ad.host in ("*", ""):
        return None
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in ad.host else socket.AF_INET,
                         ad.host.split("%", 1)[0])
        return [ad.host]                        # an address: bound as it is
    except OSError:
        pass
    infos = await asyncio.get_running_loop().getaddrinfo(
        ad.host, ad.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    hosts = list(dict.fromkeys(sa[0] for *_, sa in infos))
    if noauth:
        beyond = [h for h in hosts if not dial.is_loopback(dial.Address("tcp", h, ad.port))]
        if beyond:
            raise UsageError(f"refusing -a on {ad.dialstring()}: {ad.host} resolves to "
                             f"{', '.join(beyond)}, beyond loopback")
    return hosts


def _why(e):
    return (e.strerror if isinstance(e, OSError) and e.strerror else str(e)).replace("\n", " ")


async def serve(store, addrs, srv, a, worm, budget):
    # Dirty blocks past min(budget/4, 512 MiB) force a sync: freezing runs on the event loop
    # (about 0.2 ms a MiB), so the largest freeze stalls clients for about a tenth of a second.
    fs = Fs(store, noauth=a.a, readonly=getattr(a, "r", False), sync_interval=a.i,
            dirty_limit=min(budget // 4, DIRTY_MAX), log=log)
    route_server_log()
    asyncio.get_running_loop().set_exception_handler(_LoopErrors())
    server = Server(fs, msize=a.m, max_conns=fit_connections(a.n))
    fs.stats_sources.append(lambda: server_stats(server))
    archival = None if worm else Archival(fs)
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    fs.on_halt = done.set
    serving = False
    try:
        for line in await listen(server, addrs, srv, a.a):
            log(line)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, lambda s=sig: loop.create_task(_stop(fs, done, s)))
        fs.start()
        serving = True
        log(f"serving {store.kind} disk {store.disk.path}: era {store.committed_era}, "
            f"{store.log.avail} blocks free, {'no auth' if a.a else 'peer-credential auth'}, "
            f"{loop_name(loop)} event loop")
        await done.wait()
    finally:
        if archival is not None:
            await archival.close()
        await server.close()            # removes the sockets it made, the posted one too
        store.close()
        if serving:
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
    for name, (count, total, timed) in sorted(server.stats.items()):
        if count:
            mean = total / timed * 1e6 if timed else 0.0
            lines.append(f"{name:<9}\t{count} calls\t{mean:.1f} µs per call")
    return lines


# --- archival: 9pix's side of arch ------------------------------------------------------------

ARCH_USAGE = "arch [name hour [path] | now [yyyymmdd] | none]"


class Archival:
    """The console's arch commands, the daily schedule, and each run of `creepy arch`: the
    commit pinned for it, the thread serving it blocks through the pipe (creepy/arch.py has
    the protocol), and what /stats and the console say about it.  Nothing here blocks the
    event loop: the child runs as a process, the blocks are read on a thread.

    The configuration lives in memory: `arch name hour [path]` is given again after a restart
    (docs/arch.md)."""

    def __init__(self, fs):
        self.fs = fs
        self.name = self.hour = self.path = None
        self.daily = None           # the scheduler task
        self.next_at = None         # its next run, epoch seconds
        self.run = None             # the archive under way: day, era, pid, progress, started
        self.task = None
        self.last = None            # the result of the last run
        fs.console.register("arch", ARCH_USAGE, self.command, (0, 3))
        fs.stats_sources.append(self.stats_lines)

    # --- the console -------------------------------------------------------------------------

    def command(self, con, args):
        if not args:
            return self.stats_lines()
        if args == ["none"]:
            self._cancel_daily()
            self.name = self.hour = self.path = None
            return [self._config_line()]
        if args[0] == "now" and len(args) <= 2:
            day = args[1] if len(args) == 2 else None
            if day is not None:
                try:
                    datetime.datetime.strptime(day, "%Y%m%d")
                except ValueError:
                    return [f"arch: bad day {day!r}: use yyyymmdd"]
            return self.start(day)
        if len(args) < 2 or args[0] in ("now", "none"):
            return [f"usage: {ARCH_USAGE}"]
        name, hour = args[0], args[1]
        if any(c in name for c in "/\0") or name.startswith("."):
            return [f"arch: bad tree name {name!r}"]
        if not hour.isdigit() or not 0 <= int(hour) <= 23:
            return [f"arch: bad hour {hour!r}: use 0 to 23"]
        path = args[2] if len(args) == 3 else "rip"
        if "/" in path and os.path.isdir(path):
            path = os.path.abspath(path)    # a local directory, whatever our cwd becomes
        self.name, self.hour, self.path = name, int(hour), path
        self._cancel_daily()
        self.daily = asyncio.get_running_loop().create_task(self._daily())
        self.next_at = next_run(time.time(), self.hour)
        return [self._config_line()]

    def start(self, day=None):
        """Begin an archive now (day: yyyymmdd, default today); say so and return at once."""
        if self.name is None:
            return ["arch: not configured: use arch name hour [path] first"]
        if self.run is not None:
            return [f"arch: already running (pid {self.run['pid']})"]
        day = day or time.strftime("%Y%m%d")
        self.run = {"day": day, "era": None, "pid": None, "progress": {},
                    "started": time.monotonic()}
        self.task = asyncio.get_running_loop().create_task(self._archive(day))
        return [f"archiving {self.name} for {day} into {self.path}"]

    def _config_line(self):
        if self.name is None:
            return "arch:\tnone"
        nxt = time.strftime("%Y-%m-%d %H:%M", time.localtime(self.next_at))
        return f"arch:\ttree {self.name} daily at {self.hour:02d}:00 into {self.path}, next {nxt}"

    def stats_lines(self):
        lines = [self._config_line()]
        r = self.run
        if r is None:
            lines.append("arch run:\tidle")
        else:
            p = r["progress"]
            lines.append(
                f"arch run:\tpid {r['pid']} era {r['era']} day {r['day']} "
                + _pairs(p, ("path", "files", "dirs", "removed", "renamed", "bytes", "blocks"))
                + f" secs {time.monotonic() - r['started']:.1f}"
                + (" paused" if p.get("paused") else ""))
        if self.last is not None:
            x = self.last
            when = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(x["when"]))
            lines.append(
                f"arch last:\twhen {when} era {x.get('era')} "
                + _pairs(x, ("path", "since", "files", "dirs", "removed", "renamed", "bytes",
                             "blocks"))
                + f" secs {x['secs']:.2f} "
                + (f"error {x['error']}" if x.get("error") else "ok"))
        return lines

    # --- runs --------------------------------------------------------------------------------

    async def _daily(self):
        while True:
            at = self.next_at = next_run(time.time(), self.hour)
            while (left := at - time.time()) > 0:
                await asyncio.sleep(min(left, 60))  # the wall clock may jump: look again
            if self.run is None:
                self.start(time.strftime("%Y%m%d", time.localtime(at)))
            else:
                log(f"arch: the archive of {self.run['day']} is still running; skipping {at}")
            await asyncio.sleep(1)

    async def _archive(self, day):
        t0 = time.monotonic()
        try:
            result = await self._spawn(day)
        except FsError as e:
            result = {"error": f"sync before archiving: {e.ename}"}
        except Exception as e:     # report it; the server keeps serving
            result = {"error": f"{type(e).__name__}: {e}"}
        result["secs"] = time.monotonic() - t0      # as 9pix saw it: sync, start, archive
        result["when"] = time.time()
        result["era"] = self.run["era"]
        self.last = result
        self.run = self.task = None
        if result.get("error"):
            self.fs.console.say(f"arch: {day} failed: {result['error']}")
        else:
            self.fs.console.say(f"arch: {result.get('path')} done: era {result['era']}, "
                                f"{result.get('files')} files {result.get('bytes')} bytes "
                                f"written in {result['secs']:.2f} s")

    async def _spawn(self, day):
        fs, st = self.fs, self.fs.store
        await fs.sync()             # archive what the clients see now
        sb = st.committed
        self.run["era"] = sb["era"]
        root = entry_root(sb["root"])
        st.pins["arch"] = [root] if root is not None else []    # no sweep reclaims it
        ours, theirs = socket.socketpair()
        proc = thread = None
        result = {}
        try:
            try:
                proc = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "creepy", "arch", stdin=theirs.fileno(),
                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            finally:
                theirs.close()
            self.run["pid"] = proc.pid
            thread = threading.Thread(
                target=archproto.serve_blocks, name="arch-blocks", daemon=True,
                args=(ours, st.disk, st.bsize, st.log.start, st.log.nblocks,
                      archproto.hello(sb, self.name, self.path, day)))
            thread.start()
            await asyncio.gather(self._read_reports(proc.stdout, result),
                                 self._read_log(proc.stderr))
            rc = await proc.wait()
            if rc != 0 and not result.get("error"):
                result["error"] = (f"arch killed by {signal.Signals(-rc).name}" if rc < 0
                                   else f"arch exited with status {rc}")
            return result
        finally:
            if proc is not None and proc.returncode is None:
                proc.kill()
                await proc.wait()
            try:
                ours.shutdown(socket.SHUT_RDWR)     # ends the block thread
            except OSError:
                pass
            if thread is not None:
                await asyncio.get_running_loop().run_in_executor(None, thread.join)
            ours.close()
            st.pins.pop("arch", None)

    async def _read_reports(self, stream, result):
        async for line in stream:
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if "progress" in msg:
                self.run["progress"] = msg["progress"]
            elif "result" in msg:
                result.update(msg["result"])
            elif "log" in msg:
                log(f"arch: {msg['log']}")

    async def _read_log(self, stream):
        async for line in stream:
            log(line.decode("utf-8", "replace").rstrip())

    def _cancel_daily(self):
        if self.daily is not None:
            self.daily.cancel()
            self.daily = None
        self.next_at = None

    async def close(self):
        """9pix is stopping: no more schedule, and a run under way is ended (its day stays
        named .partial in the WORM; the next run removes it)."""
        self._cancel_daily()
        if self.task is not None:
            self.task.cancel()
            try:
                await self.task
            except (asyncio.CancelledError, Exception):
                pass


def next_run(now, hour):
    """The next time, after now (epoch seconds), that the local clock reads hour:00."""
    t = datetime.datetime.fromtimestamp(now).replace(hour=hour, minute=0, second=0,
                                                     microsecond=0)
    if t.timestamp() <= now:
        t = (t + datetime.timedelta(days=1)).replace(hour=hour)
    return t.timestamp()


def _pairs(d, keys):
    return " ".join(f"{k} {d[k]}" for k in keys if d.get(k) is not None)
