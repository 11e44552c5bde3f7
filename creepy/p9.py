"""creepy 9p: plan9port's 9p(1), and whole files and trees in and out.

    creepy 9p [-a addr | -s srv] [-A aname] [-u user] cmd args...

    read path               the file to standard output
    readfd path             the same (plan9port's opens through openfd; 9P2000 has none)
    write [-l] path         standard input to the file (which must exist), truncating it;
                            -l writes one line per Twrite
    writefd path            the same as write
    stat path               stat(5) of the file, in Plan 9's %D format
    rdwr path               open for reading and writing; then, until standard input ends:
                            copy a read of the file to standard output, a line of standard
                            input to the file
    ls [-dlnt] [path...]    list directories (or, with -d, the files themselves) as
                            plan9port's 9p ls does: names, or ls -l lines with -l; -n leaves
                            the server's order, -t sorts by time (newest first)
    create path...          create files (mode 0666, as plan9port)
    rm path...              remove files and empty directories
    put [-r] local remote   copy a local file (or, with -r, a tree) to the server
    get [-r] remote local   copy a file (or, with -r, a tree) from the server

Where to connect, as plan9port's 9p: with -a, a dial string (`tcp!host!port`, `host:port`,
`unix!/path`; a bare host name means `tcp!host!9fs`), and every path is relative to the root
of the attach; with -s, the service of that name posted in the name space directory;
with neither, the first element of each path names the posted service
(`creepy 9p ls 9pix/usr` lists /usr of the posted 9pix).

put and get keep permission bits and modification times, copy several files at once, refuse
to overwrite a directory with a file and skip (with a warning) what 9P2000 cannot hold:
symbolic links, devices, sockets and pipes.  A destination that is an existing directory
receives the copy under the source's name, as with cp(1).  They show a progress bar
on standard error (tqdm) when it is a terminal and more than PROGRESS_MIN bytes are copied.

Errors are one line on standard error, `creepy 9p: ...`; the exit status is 0 when all went
well, 1 when something failed (ls, create, rm and put/get go on with the next name first),
2 for a usage error.
"""

import argparse
import asyncio
import collections
import os
import signal
import stat as statmod
import sys
import time

from creepy.ninep import dial
from creepy.ninep.client import Client, Error9P, nochange
from creepy.ninep.codec import DMAPPEND, DMDIR, DMEXCL, OREAD, ORDWR, OTRUNC, OWRITE, QTAPPEND, \
    QTAUTH, QTDIR, QTEXCL

#: bytes a copy must exceed before it shows a progress bar
PROGRESS_MIN = 4 << 20
#: files put or get copies at once
PARALLEL = 8
#: bytes read from a local file (or asked of the server) at a time by put and get
CHUNK = 8 << 20
#: reads of one file in flight at once (read, get)
READ_WINDOW = 4
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


class Fail(Exception):
    """A fatal error: print it, exit 1."""


# --- Plan 9 formats ---------------------------------------------------------------------------

def quote(s):
    """Plan 9's %q: the string in single quotes (each ' doubled) if it is empty or holds a
    blank, a control character or a quote; else as it is."""
    if s and not any(c <= " " or c == "'" for c in s):
        return s
    return "'" + s.replace("'", "''") + "'"


def modestr(mode):
    """Plan 9's %M: d/a/A/- then l/- then rwx three times ('d-rwxr-xr-x')."""
    first = "d" if mode & DMDIR else "a" if mode & DMAPPEND else "A" if mode & 0x08000000 else "-"
    out = [first, "l" if mode & DMEXCL else "-"]
    for shift in (6, 3, 0):
        bits = (mode >> shift) & 7
        out.append(("r" if bits & 4 else "-") + ("w" if bits & 2 else "-")
                   + ("x" if bits & 1 else "-"))
    return "".join(out)


def qidtype(t):
    return (("d" if t & QTDIR else "") + ("a" if t & QTAPPEND else "")
            + ("l" if t & QTEXCL else "") + ("A" if t & QTAUTH else ""))


def dirfmt(st):
    """Plan 9's %D (fcallfmt.c), as `9p stat` prints it."""
    q = st.qid
    return (f"'{st.name}' '{st.uid}' '{st.gid}' '{st.muid}' "
            f"q ({q.path:016x} {q.vers} {qidtype(q.type)}) m 0{st.mode:o} "
            f"at {st.atime} mt {st.mtime} l {st.length} t {st.type} d {st.dev}")


def timefmt(t, now):
    """ls -l's time: 'Jan  5 10:00' within six months of now, else 'Jan  5  2024'."""
    tm = time.localtime(t)
    if now - t < 6 * 30 * 86400:
        return f"{MONTHS[tm.tm_mon - 1]} {tm.tm_mday:2d} {tm.tm_hour:02d}:{tm.tm_min:02d}"
    return f"{MONTHS[tm.tm_mon - 1]} {tm.tm_mday:2d} {tm.tm_year:5d}"


def lslines(entries, long):
    """Lines of `9p ls` for entries (already sorted)."""
    if not long:
        return [quote(st.name) for st in entries]
    now = time.time()
    wu = max((len(st.uid) for st in entries), default=0)
    wg = max((len(st.gid) for st in entries), default=0)
    wl = max((len(str(st.length)) for st in entries), default=0)
    return [f"{modestr(st.mode)} M 0 {st.uid:<{wu}} {st.gid:<{wg}} {st.length:>{wl}} "
            f"{timefmt(st.mtime, now)} {quote(st.name)}" for st in entries]


# --- connections ------------------------------------------------------------------------------

def resolve(args, path):
    """(address, path on the server) for a path given on the command line."""
    if args.a:
        a = args.a
        if not any(c in a for c in "!:/") and not a.isdigit():
            a = f"tcp!{a}!9fs"      # plan9port: netmkaddr(addr, "tcp", "9fs")
        return a, path
    if args.s:
        return f"unix!{dial.service_path(args.s)}", path
    service, _, rest = path.lstrip("/").partition("/")
    if not service:
        raise Fail(f"{path!r}: without -a or -s a path starts with the name of a posted "
                   f"service (9pix/usr/glenda)")
    return f"unix!{dial.service_path(service)}", rest


class Mounts:
    """One connection per address, made when first needed (paths of one command may name
    different posted services)."""

    def __init__(self, args):
        self.args = args
        self.clients = {}

    async def get(self, path):
        addr, rest = resolve(self.args, path)
        c = self.clients.get(addr)
        if c is None:
            try:
                dial.parse(addr)
                c = await Client.connect(addr, uname=self.args.u, aname=self.args.A or "")
            except ValueError as e:
                raise Fail(str(e)) from None
            except (OSError, ConnectionError, Error9P) as e:
                raise Fail(f"cannot attach {self.args.A or ''!r} on {addr}: {e}") from None
            self.clients[addr] = c
        return c, rest

    async def close(self):
        for c in self.clients.values():
            await c.close()


async def clunk(c, fid):
    try:
        await c.clunk(fid)
    except (Error9P, ConnectionError):
        pass


async def stream(c, fid, pipelined=True):
    """Yield the file's data in order from offset 0.

    With ``pipelined``, READ_WINDOW reads are in flight at once; a short read (the end of
    the file, or a server that answers less than it was asked) cancels the reads after it and
    the window starts again where the data ended.  Without, one read at a time: a
    synthesized file (/cons) may not take offsets.
    """
    unit = c.iounit(fid)
    window = READ_WINDOW if pipelined else 1
    pending = collections.deque()
    off = nxt = 0
    try:
        while True:
            while len(pending) < window:
                pending.append(asyncio.ensure_future(c.read(fid, nxt, unit)))
                nxt += unit
            data = await pending.popleft()
            if not data:
                return
            yield data
            off += len(data)
            if len(data) < unit and pending:
                await _cancel(pending)
                nxt = off
    finally:
        await _cancel(pending)


async def _cancel(futures):
    for f in futures:
        f.cancel()
    await asyncio.gather(*futures, return_exceptions=True)
    futures.clear()


# --- the verbs --------------------------------------------------------------------------------

def warn(msg, progress=None):
    if progress is not None:
        progress.write(f"creepy 9p: {msg}")
    else:
        print(f"creepy 9p: {msg}", file=sys.stderr)


async def openpath(c, path, mode):
    """A fid for path, open with mode."""
    fid = await c.walkpath(path)
    try:
        await c.open(fid, mode)
    except BaseException:
        await clunk(c, fid)
        raise
    return fid


async def x_read(m, a):
    c, path = await m.get(a.path)
    fid = await openpath(c, path, OREAD)
    try:
        st = await c.stat(fid)
        regular = not st.qid.type & QTDIR and st.length > 0
        async for data in stream(c, fid, pipelined=regular):
            sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    finally:
        await clunk(c, fid)
    return 0


async def x_write(m, a):
    c, path = await m.get(a.path)
    fid = await openpath(c, path, OWRITE | OTRUNC)
    status = 0
    off = 0
    src = sys.stdin.buffer
    try:
        if getattr(a, "l", False):
            wrote = False
            for line in src:
                wrote = True
                try:
                    n = await c.write(fid, off, line)
                except Error9P as e:
                    warn(f"write: {e}")
                    status = 1
                    continue
                off += n
            if not wrote:
                await c.write(fid, 0, b"")
        else:
            while True:
                data = src.read1(CHUNK)
                if not data:
                    break
                n = await c.write(fid, off, data)
                if n != len(data):
                    raise Fail(f"write error: {n} of {len(data)} bytes written")
                off += n
            if off == 0:
                await c.write(fid, 0, b"")
    finally:
        await clunk(c, fid)
    return status


async def x_stat(m, a):
    c, path = await m.get(a.path)
    print(dirfmt(await c.stat_path(path)))
    return 0


async def x_rdwr(m, a):
    c, path = await m.get(a.path)
    fid = await openpath(c, path, ORDWR)
    out = sys.stdout.buffer
    try:
        while True:
            try:
                data = await c.read(fid, 0, c.iounit(fid))
            except Error9P as e:
                warn(f"read: {e}")
            else:
                out.write(data + b"\n")
                out.flush()
            line = sys.stdin.buffer.readline()
            if not line:
                break
            try:
                await c.write(fid, 0, line)
            except Error9P as e:
                warn(f"write: {e}")
    finally:
        await clunk(c, fid)
    return 0


async def x_ls(m, a):
    status = 0
    for name in a.paths or [""]:
        c, path = await m.get(name)
        try:
            st = await c.stat_path(path)
        except Error9P as e:
            warn(f"dirstat {name}: {e}")
            status = 1
            continue
        if st.mode & DMDIR and not a.d:
            try:
                entries = await c.listdir(path)
            except Error9P as e:
                warn(f"dirreadall {name}: {e}")
                status = 1
                continue
            if a.t:
                entries.sort(key=lambda e: (-e.mtime, e.name.encode()))
            elif not a.n:
                entries.sort(key=lambda e: e.name.encode())
        else:
            entries = [st]
        for line in lslines(entries, a.l):
            print(line)
    return status


async def x_create(m, a):
    status = 0
    for name in a.paths:
        c, path = await m.get(name)
        parent, _, base = path.rstrip("/").rpartition("/")
        try:
            fid = await c.walkpath(parent)
            try:
                await c.create(fid, base, 0o666, OREAD)
            finally:
                await clunk(c, fid)
        except Error9P as e:
            warn(f"create {name}: {e}")
            status = 1
    return status


async def x_rm(m, a):
    status = 0
    for name in a.paths:
        c, path = await m.get(name)
        try:
            await c.remove_path(path)
        except Error9P as e:
            warn(f"remove {name}: {e}")
            status = 1
    return status


# --- put and get ------------------------------------------------------------------------------

class Progress:
    """A tqdm bar on standard error for copies above PROGRESS_MIN bytes when it is a terminal;
    nothing otherwise.  Warnings go through it so that they do not break the bar."""

    def __init__(self, total, what):
        self.bar = None
        if total > PROGRESS_MIN and sys.stderr.isatty():
            from tqdm import tqdm
            self.bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
                            desc=what, file=sys.stderr, dynamic_ncols=True)

    def update(self, n):
        if self.bar is not None:
            self.bar.update(n)

    def write(self, msg):
        if self.bar is not None:
            self.bar.write(msg, file=sys.stderr)
        else:
            print(msg, file=sys.stderr)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def join(*parts):
    return "/".join(p.strip("/") for p in parts if p.strip("/"))


class Copy:
    """What one put or get does: directories to make, files to copy, times to set last."""

    def __init__(self):
        self.dirs = []      # (source, destination, mode, mtime), parents first
        self.files = []     # (source, destination, mode, mtime, length)
        self.status = 0

    @property
    def total(self):
        return sum(f[4] for f in self.files)


def plan_put(src, dst, recursive, progress_warn):
    """The Copy for putting local src at remote dst (a path that does not name a directory)."""
    cp = Copy()
    st = os.lstat(src)
    if statmod.S_ISREG(st.st_mode):
        cp.files.append((src, dst, st.st_mode & 0o777, int(st.st_mtime), st.st_size))
        return cp
    if not statmod.S_ISDIR(st.st_mode):
        raise Fail(f"{src}: not a regular file or a directory")
    if not recursive:
        raise Fail(f"{src}: is a directory (use put -r)")
    cp.dirs.append((src, dst, st.st_mode & 0o777, int(st.st_mtime)))
    todo = [(src, dst)]
    while todo:
        ldir, rdir = todo.pop()
        try:
            names = sorted(os.listdir(ldir))
        except OSError as e:
            progress_warn(f"{ldir}: {e.strerror}")
            cp.status = 1
            continue
        for name in names:
            lp, rp = os.path.join(ldir, name), join(rdir, name)
            try:
                st = os.lstat(lp)
            except OSError as e:
                progress_warn(f"{lp}: {e.strerror}")
                cp.status = 1
                continue
            if statmod.S_ISDIR(st.st_mode):
                cp.dirs.append((lp, rp, st.st_mode & 0o777, int(st.st_mtime)))
                todo.append((lp, rp))
            elif statmod.S_ISREG(st.st_mode):
                cp.files.append((lp, rp, st.st_mode & 0o777, int(st.st_mtime), st.st_size))
            else:
                progress_warn(f"skipping {lp}: 9P2000 holds only files and directories")
                cp.status = 1
    return cp


async def plan_get(c, src, dst, recursive):
    """The Copy for getting remote src into local dst (a path that does not name a
    directory)."""
    cp = Copy()
    st = await c.stat_path(src)
    if not st.mode & DMDIR:
        cp.files.append((src, dst, st.mode & 0o777, st.mtime, st.length))
        return cp
    if not recursive:
        raise Fail(f"{src or '/'}: is a directory (use get -r)")
    cp.dirs.append((src, dst, st.mode & 0o777, st.mtime))
    level = [(src, dst)]
    while level:
        listings = await asyncio.gather(*(c.listdir(r) for r, _ in level))
        nxt = []
        for (rdir, ldir), entries in zip(level, listings):
            for e in sorted(entries, key=lambda e: e.name):
                rp, lp = join(rdir, e.name), os.path.join(ldir, e.name)
                if e.mode & DMDIR:
                    cp.dirs.append((rp, lp, e.mode & 0o777, e.mtime))
                    nxt.append((rp, lp))
                else:
                    cp.files.append((rp, lp, e.mode & 0o777, e.mtime, e.length))
        level = nxt
    return cp


async def put_file(c, src, dst, mode, mtime, progress):
    fid = await c._open_or_create(dst, mode, OWRITE | OTRUNC)
    try:
        off = 0
        with open(src, "rb") as f:
            while True:
                data = f.read(CHUNK)
                if not data:
                    break
                n = await c.write(fid, off, data)
                if n != len(data):
                    raise Error9P(f"short write: {n} of {len(data)} bytes")
                off += n
                progress.update(n)
        await set_times(c, fid, mode, mtime)
    finally:
        await clunk(c, fid)


async def set_times(c, fid, mode, mtime):
    """Give the remote file the local permission bits (create masks them with the parent's,
    as Plan 9 does) and modification time."""
    have = await c.stat(fid)
    st = nochange()
    st.mtime = mtime
    if have.mode & 0o777 != mode:
        st.mode = (have.mode & ~0o777) | mode
    await c.wstat(fid, st)


async def get_file(c, src, dst, mode, mtime, progress):
    fid = await openpath(c, src, OREAD)
    try:
        st = await c.stat(fid)
        with open(dst, "wb") as f:
            async for data in stream(c, fid, pipelined=st.length > 0):
                f.write(data)
                progress.update(len(data))
    finally:
        await clunk(c, fid)
    os.chmod(dst, mode)
    os.utime(dst, (mtime, mtime))


async def run_copy(cp, make_dir, copy_file, finish_dir, what):
    """Make the directories, copy the files PARALLEL at a time, then give the directories
    their modes and times (deepest first: writing into a directory changes its mtime)."""
    progress = Progress(cp.total, what)
    status = cp.status
    try:
        for src, dst, mode, mtime in cp.dirs:
            await make_dir(dst, mode)
        gate = asyncio.Semaphore(PARALLEL)

        async def one(f):
            async with gate:
                try:
                    await copy_file(*f[:4], progress)
                except (Error9P, OSError) as e:
                    progress.write(f"creepy 9p: {f[0]}: {getattr(e, 'strerror', None) or e}")
                    return 1
                return 0
        status = max([status] + await asyncio.gather(*(one(f) for f in cp.files)))
        for src, dst, mode, mtime in reversed(cp.dirs):
            try:
                await finish_dir(dst, mode, mtime)
            except (Error9P, OSError) as e:
                progress.write(f"creepy 9p: {dst}: {getattr(e, 'strerror', None) or e}")
                status = 1
    finally:
        progress.close()
    return status


async def x_put(m, a):
    c, rpath = await m.get(a.remote)
    src = a.local
    try:
        os.lstat(src)
    except OSError as e:
        raise Fail(f"{src}: {e.strerror}") from None
    try:
        there = await c.stat_path(rpath)
    except Error9P:
        there = None
    if there is not None and there.mode & DMDIR:
        rpath = join(rpath, os.path.basename(os.path.normpath(src)))
    cp = plan_put(src, rpath, a.r, warn)

    async def make_dir(dst, mode):
        try:
            await c.mkdir(dst, mode)
        except Error9P as e:
            try:
                st = await c.stat_path(dst)
            except Error9P:
                raise Fail(f"mkdir {dst}: {e}") from None
            if not st.mode & DMDIR:
                raise Fail(f"mkdir {dst}: a file is in the way") from None

    async def finish_dir(dst, mode, mtime):
        fid = await c.walkpath(dst)
        try:
            await set_times(c, fid, mode, mtime)
        finally:
            await clunk(c, fid)

    return await run_copy(cp, make_dir, lambda *f: put_file(c, *f), finish_dir, "put")


async def x_get(m, a):
    c, rpath = await m.get(a.remote)
    dst = a.local
    try:
        st = await c.stat_path(rpath)
    except Error9P as e:
        raise Fail(f"{a.remote}: {e}") from None
    if os.path.isdir(dst):
        name = rpath.rstrip("/").rpartition("/")[2]
        if name or not st.mode & DMDIR:
            dst = os.path.join(dst, name or st.name)
    cp = await plan_get(c, rpath, dst, a.r)

    async def make_dir(path, mode):
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            if not os.path.isdir(path):
                raise Fail(f"mkdir {path}: a file is in the way") from None
        except OSError as e:
            raise Fail(f"mkdir {path}: {e.strerror}") from None

    async def finish_dir(path, mode, mtime):
        os.chmod(path, mode)
        os.utime(path, (mtime, mtime))

    return await run_copy(cp, make_dir, lambda *f: get_file(c, *f), finish_dir, "get")


# --- the command ------------------------------------------------------------------------------

def _verbs():
    def parser(name, *specs):
        p = argparse.ArgumentParser(prog=f"creepy 9p {name}")
        for flags, kw in specs:
            p.add_argument(*flags, **kw)
        return p
    flag = {"action": "store_true"}
    path = (("path",), {})
    paths = (("paths",), {"nargs": "+"})
    return {
        "read": (parser("read", path), x_read),
        "readfd": (parser("readfd", path), x_read),
        "write": (parser("write", (("-l",), dict(flag, help="one Twrite per line")), path),
                  x_write),
        "writefd": (parser("writefd", path), x_write),
        "stat": (parser("stat", path), x_stat),
        "rdwr": (parser("rdwr", path), x_rdwr),
        "ls": (parser("ls", (("-d",), flag), (("-l",), flag), (("-n",), flag), (("-t",), flag),
                      (("paths",), {"nargs": "*"})), x_ls),
        "create": (parser("create", paths), x_create),
        "rm": (parser("rm", paths), x_rm),
        "put": (parser("put", (("-r",), flag), (("local",), {}), (("remote",), {})), x_put),
        "get": (parser("get", (("-r",), flag), (("remote",), {}), (("local",), {})), x_get),
    }


async def _run(a, verb, va):
    m = Mounts(a)
    try:
        return await verb(m, va)
    finally:
        await m.close()


def main(argv=None):
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)   # `creepy 9p read x | head` ends quietly
    verbs = _verbs()
    ap = argparse.ArgumentParser(
        prog="creepy 9p", description="plan9port's 9p: read and write files on a 9P server.",
        epilog="commands: " + ", ".join(verbs) + " (creepy 9p CMD -h for each)")
    where = ap.add_mutually_exclusive_group()
    where.add_argument("-a", metavar="addr", help="dial this address (tcp!host!port, ...)")
    where.add_argument("-s", metavar="srv", help="dial the service posted under this name")
    ap.add_argument("-A", metavar="aname", help="attach this tree (default: the empty aname)")
    ap.add_argument("-u", metavar="user", help="attach as this user (default: who runs us)")
    ap.add_argument("cmd", choices=list(verbs), metavar="cmd")
    ap.add_argument("args", nargs=argparse.REMAINDER)
    a = ap.parse_args(argv)
    vp, verb = verbs[a.cmd]
    va = vp.parse_args(a.args)
    try:
        return asyncio.run(_run(a, verb, va))
    except Fail as e:
        print(f"creepy 9p: {e}", file=sys.stderr)
    except Error9P as e:
        what = getattr(va, "path", None) or getattr(va, "remote", None) or ""
        print(f"creepy 9p: {a.cmd} {what}: {e}", file=sys.stderr)
    except ConnectionError as e:
        print(f"creepy 9p: {e}", file=sys.stderr)
    except OSError as e:
        print(f"creepy 9p: {e.filename + ': ' if e.filename else ''}{e.strerror or e}",
              file=sys.stderr)
    except KeyboardInterrupt:
        return 130
    except Exception as e:      # a bug of ours: one line, not a traceback
        print(f"creepy 9p: internal error: {e!r}", file=sys.stderr)
    return 1
