"""creepy arch: copy one committed tree of 9pix into the WORM, incrementally.

    creepy arch [-D] [dir]        (started by 9pix, never by hand; see docs/arch.md)

The archiver reads frozen blocks of one commit from 9pix through its standard input, a
bidirectional pipe (a socketpair), and writes the tree they make into rip over 9P (attach
"wormwr") as <name>/<yyyy>/<mmdd>, or <mmdd>.1, .2 ... when the day already exists; or into
a local directory ("any other file server").  It never touches 9pix's disk itself and it
never trusts a block: each is verified as the store verifies its own reads (magic, type, own
address, the birth era its pointer names, not newer than the commit, checksum).

This module holds both halves of the pipe protocol, so neither side can drift from the other:

  9pix -> arch   frames: size[4] (little-endian, bytes after it) kind[1] body
                   kind 'H' hello: msgpack map (version, bsize, nblocks, era, root, name,
                                   dest, day, owner), sent once, first
                   kind 'B' block: the raw block, bsize bytes, as it is on the disk
                   kind 'E' error: UTF-8 text, in place of a block 9pix could not read
  arch -> 9pix   address[8] (little-endian): a block request.  Requests may be pipelined;
                 9pix answers each with one B or E frame, in order.  Closing the pipe ends
                 the session.

9pix checks an address only against the bounds of its log (`serve_blocks`); everything else
is arch's business.  arch reports progress and its result as JSON lines on its standard
output (`{"progress": {...}}`, `{"result": {...}}`) and logs on its standard error.

Incremental archives (DESIGN invariants 6 and 8).  Every entry records the newest era in
which it or anything below it changed, and every block the era it was born in.  The archive
of era P is a faithful copy of commit P, so an entry whose era is <= P has not changed since:
it sits, identical, at the same path in the previous archive.  A later archive therefore
links the previous one to its new name (copy on write in rip) and descends only into entries
of era > P; in a changed file only DATA blocks born after P are written, and only pointer
blocks born after P are read.  Directories that changed are listed on both sides to find
removed files.  A changed entry is updated in place only when the archived file at its path
was copied from the same source file (qid.path): the WORM keeps a map from rip's qid.path to
the source's (<name>/.arch/qids), written once when arch creates a file, so renamed files
are moved (renamed in rip) rather than rewritten, and a new file that took an old name is
copied whole.  Cost follows the change, not the tree.
"""

import argparse
import asyncio
import concurrent.futures
import json
import os
import shutil
import socket
import stat as statmod
import struct
import sys
import time

import msgpack

from creepy.errors import CorruptBlock
from creepy.ninep import dial
from creepy.ninep.client import Client, Error9P, nochange
from creepy.store.format import (DATA, DMAPPEND, DMDIR, DMSYMLINK, DMTMP, E_ERA, E_GID,
                                 E_LENGTH, E_MODE, E_MTIME, E_NAME, E_PATH, E_UID, LEAF, NODE,
                                 PTRBLK, QPATH_BITS, payload_capacity)
from creepy.store.sweep import TreeReader, entry_root

PROTO_VERSION = 1
FRAME = struct.Struct("<I")
ADDR = struct.Struct("<Q")
HELLO, BLOCK, ERROR = b"H", b"B", b"E"
MAX_FRAME = 1 << 20            # hello and blocks are far smaller (blocks are at most 64 KiB)
WINDOW = 64                    # block requests in flight on the pipe
CHUNK = 64                     # blocks per write into the WORM (1 MiB with 16 KiB blocks)
PARALLEL = 16                  # files being copied at once
QIDS_ENTRY = struct.Struct("<Q")
HUGE = 1 << 62

# --- the pipe: framing -------------------------------------------------------------------


def frame(kind, body):
    return FRAME.pack(len(body) + 1) + kind + body


def recv_exact(sock, n):
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = sock.recv_into(view[got:])
        if k == 0:
            raise EOFError("the pipe to 9pix is closed")
        got += k
    return buf


def read_frame(sock):
    (n,) = FRAME.unpack(recv_exact(sock, 4))
    if not 1 <= n <= MAX_FRAME:
        raise EOFError(f"bad frame of {n} bytes from 9pix")
    body = recv_exact(sock, n)
    return bytes(body[:1]), body[1:]


# --- 9pix's half -------------------------------------------------------------------------


def hello(sb, name, dest, day):
    """What 9pix tells arch first: the commit to archive and where it goes."""
    return {"version": PROTO_VERSION, "bsize": sb["bsize"], "nblocks": sb["nblocks"],
            "era": sb["era"], "root": sb["root"], "owner": sb["owner"], "name": name,
            "dest": dest, "day": day}


def serve_blocks(sock, disk, bsize, lo, hi, hello_msg):
    """Send the hello, then answer block requests until arch closes the pipe (a thread).

    Only bounds are checked here (lo <= addr < hi, the log); arch verifies every block."""
    try:
        sock.sendall(frame(HELLO, msgpack.packb(hello_msg, use_bin_type=True)))
        while True:
            try:
                (addr,) = ADDR.unpack(recv_exact(sock, ADDR.size))
            except EOFError:
                return
            if not lo <= addr < hi:
                sock.sendall(frame(ERROR, f"block {addr} is outside the log "
                                          f"({lo}..{hi - 1})".encode()))
                continue
            try:
                raw = disk.pread(addr * bsize, bsize)
            except (OSError, ValueError) as e:
                sock.sendall(frame(ERROR, f"block {addr}: read error: {e}".encode()))
                continue
            sock.sendall(frame(BLOCK, raw))
    except OSError:
        return          # arch went away, or 9pix is closing the pipe


# --- arch's half: the source ----------------------------------------------------------------


class PipeDisk:
    """9pix's disk as arch sees it: whole blocks through the pipe, for a TreeReader.

    Used by one thread.  prefetch() pipelines many requests; pread() takes what a prefetch
    brought, or asks for one block."""

    def __init__(self, sock, bsize):
        self.sock = sock
        self.bsize = bsize
        self.ahead = {}             # addr -> raw bytes, or the CorruptBlock 9pix answered
        self.requests = 0

    def pread(self, off, n):
        addr = off // self.bsize
        if addr not in self.ahead:
            self.prefetch([addr])
        raw = self.ahead.pop(addr)
        if isinstance(raw, Exception):
            raise raw
        return raw

    def prefetch(self, addrs):
        want = [a for a in dict.fromkeys(addrs) if a not in self.ahead]
        for i in range(0, len(want), WINDOW):
            chunk = want[i:i + WINDOW]
            self.sock.sendall(b"".join(ADDR.pack(a) for a in chunk))
            self.requests += len(chunk)
            for a in chunk:     # every reply is read, even after an error, to stay in step
                kind, body = read_frame(self.sock)
                if kind == BLOCK:
                    self.ahead[a] = body
                elif kind == ERROR:
                    self.ahead[a] = CorruptBlock(a, "9pix: " + body.decode("utf-8", "replace"))
                else:
                    raise EOFError(f"unexpected frame {kind!r} from 9pix")


def dir_entries(reader, e):
    """The entries of directory entry e, in name order (its LEAF blocks, level by level)."""
    r = entry_root(e)
    if r is None:
        return []
    addr, era, btype, depth = r
    level = [(addr, era)]
    while depth > 0:
        reader.disk.prefetch([a for a, _ in level])
        level = [kid for a, ea in level for kid in reader.children(a, ea, NODE)]
        depth -= 1
    reader.disk.prefetch([a for a, _ in level])
    return [ent for a, ea in level for ent in reader.children(a, ea, LEAF)]


def changed_blocks(reader, e, since):
    """What of file entry e changed after era `since`: ([(index, addr, era)] of DATA blocks
    born after it, [(lo, hi)] block ranges that are holes in pointer blocks born after it).
    Subtrees born at or before `since` are not read."""
    r = entry_root(e)
    if r is None:
        return [], [(0, HUGE)]
    addr, era, _, depth = r
    blocks, holes = [], []
    fan = reader.fanout

    def visit(a, ea, d, base):
        if ea <= since:
            return
        if d == 0:
            blocks.append((base, a, ea))
            return
        span = fan ** (d - 1)
        slots = reader.children(a, ea, PTRBLK)
        if d > 1:
            reader.disk.prefetch([p[0] for p in slots if p is not None and p[1] > since])
        for i, p in enumerate(slots):
            lo = base + i * span
            if p is not None:
                visit(p[0], p[1], d - 1, lo)
            elif holes and holes[-1][1] == lo:
                holes[-1] = (holes[-1][0], lo + span)
            else:
                holes.append((lo, lo + span))

    visit(addr, era, depth, 0)
    return blocks, holes


def read_data(reader, refs):
    """Verified payloads of DATA blocks [(addr, era)], requested together."""
    reader.disk.prefetch([a for a, _ in refs])
    return [reader.block(a, ea, DATA) for a, ea in refs]


# --- arch's half: destinations ------------------------------------------------------------


class Gone(Exception):
    pass


class Dest9P:
    """rip (or any 9P server with a wormwr attach and a console link command)."""

    can_link = True

    def __init__(self, addr):
        self.addr = addr
        self.c = None
        self.main = None

    async def connect(self):
        try:
            self.c = await Client.connect(self.addr, aname="wormwr")
        except (OSError, ValueError) as e:
            raise Gone(f"cannot reach the WORM at {self.addr}: "
                       f"{getattr(e, 'strerror', None) or e}") from None
        self.main = self.c.alloc_fid()
        await self.c.attach(self.main, dial.getuser(), "main")

    async def close(self):
        if self.c is not None:
            await self.c.close()

    async def stat(self, path):
        try:
            return await self.c.stat_path(path)
        except Error9P:
            return None

    async def listdir(self, path):
        return {st.name: st for st in await self.c.listdir(path)}

    async def mkdir(self, path):
        return (await self.c.mkdir(path, 0o775)).path

    async def remove_tree(self, path, st=None):
        """Remove path and everything below it (9P removes only empty directories); return
        how many files and directories went.  Children go in parallel (the client bounds
        the requests in flight)."""
        st = st or await self.stat(path)
        if st is None:
            return 0
        n = 1
        if st.mode & DMDIR:
            kids = await self.listdir(path)
            n += sum(await asyncio.gather(*(self.remove_tree(f"{path}/{k}", s)
                                            for k, s in kids.items())))
        try:
            await self.c.remove_path(path)
        except Error9P as e:
            raise Gone(f"remove {path}: {e}") from None
        return n

    async def rename(self, path, newname):
        await self.c.rename(path, newname)

    async def link(self, src, dst):
        out = await self.c.cons(f"link {src} {dst}", fid=self.main, timeout=120)
        if "linked" not in out:
            raise Gone(f"rip: link {src} {dst}: {out.strip()}")

    async def read_file(self, path):
        try:
            return await self.c.read_file(path)
        except Error9P:
            return None

    async def append(self, path, data):
        await self.c.append(path, data)

    async def sync(self):
        await self.c.sync_file("")

    # files: a handle is an open fid
    async def create(self, parent, name, mode):
        f = await self.c.walkpath(parent)
        try:
            # a symbolic link is archived as what it is: a file whose content is its target
            qid, _ = await self.c.create(f, name, mode & (0o777 | DMSYMLINK), 2)  # ORDWR
        except BaseException:
            await self._clunk(f)
            raise
        return f, qid.path

    async def open(self, path, old):
        f = await self.c.walkpath(path)
        try:
            if old.mode & DMAPPEND:     # an append-only file would ignore our offsets
                await self._wstat(f, mode=old.mode & ~DMAPPEND)
            await self.c.open(f, 2)     # ORDWR
        except BaseException:
            await self._clunk(f)
            raise
        return f

    async def write(self, f, off, data):
        n = await self.c.write(f, off, data)
        if n != len(data):
            raise Gone(f"short write ({n} of {len(data)} bytes)")

    async def read(self, f, off, n):
        out = []
        while n > 0:
            b = await self.c.read(f, off, n)
            if not b:
                break
            out.append(b)
            off += len(b)
            n -= len(b)
        return b"".join(out)

    async def truncate(self, f, length):
        await self._wstat(f, length=length)

    async def close_file(self, f):
        await self.c.clunk(f)

    async def setattr(self, f, e, length=None):
        await self._wstat(f, mode=e[E_MODE], mtime=e[E_MTIME] // 1_000_000_000, uid=e[E_UID],
                          gid=e[E_GID], **({} if length is None else {"length": length}))

    async def setattr_path(self, path, e):
        f = await self.c.walkpath(path)
        try:
            await self.setattr(f, e)
        finally:
            await self._clunk(f)

    async def _clunk(self, f):
        try:
            await self.c.clunk(f)
        except Error9P:
            pass

    async def _wstat(self, f, **fields):
        st = nochange()
        for k, v in fields.items():
            setattr(st, k, v)
        await self.c.wstat(f, st)

    # the qid map: rip's qid.path -> the source's, 8 bytes at 8 * rip qid.path
    async def map_get(self, path, qpaths):
        out = {}
        if not qpaths:
            return out
        f = await self.c.walkpath(path)
        try:
            await self.c.open(f, 0)
            for lo, hi in _runs(sorted(set(qpaths)), gap=512):
                raw = await self.read(f, lo * 8, (hi - lo) * 8)
                for q in range(lo, hi):
                    if (q - lo) * 8 + 8 <= len(raw):
                        out[q] = QIDS_ENTRY.unpack_from(raw, (q - lo) * 8)[0]
        finally:
            await self._clunk(f)
        return out

    async def map_put(self, path, pairs):
        if not pairs:
            return
        f = await self.c.walkpath(path)
        try:
            await self.c.open(f, 1)
            pairs = dict(pairs)
            for lo, hi in _runs(sorted(pairs), gap=0):
                data = b"".join(QIDS_ENTRY.pack(pairs[q]) for q in range(lo, hi))
                await self.write(f, lo * 8, data)
        finally:
            await self._clunk(f)


class DestDir:
    """A local directory: any other file server, mounted.  No link: every archive is a full
    copy.  Mode bits and mtime are kept; owner and group are not (they are Plan 9 names)."""

    can_link = False

    def __init__(self, root):
        self.root = root

    def _p(self, path):
        return os.path.join(self.root, *[p for p in path.split("/") if p])

    async def connect(self):
        if not os.path.isdir(self.root):
            raise Gone(f"{self.root}: not a directory")

    async def close(self):
        pass

    async def stat(self, path):
        try:
            st = os.stat(self._p(path))
        except FileNotFoundError:
            return None
        return _LocalStat(os.path.basename(self._p(path)), st)

    async def listdir(self, path):
        p = self._p(path)
        return {n: _LocalStat(n, os.stat(os.path.join(p, n))) for n in os.listdir(p)}

    async def mkdir(self, path):
        os.mkdir(self._p(path), 0o775)
        return 0

    async def remove_tree(self, path):
        p = self._p(path)
        if not os.path.lexists(p):
            return 0

        def writable(func, where, exc):     # read-only directories as the tree had them
            os.chmod(os.path.dirname(where), 0o755)
            func(where)
        for d, _, _ in os.walk(p):
            os.chmod(d, 0o755)
        shutil.rmtree(p, onerror=writable)
        return 1

    async def rename(self, path, newname):
        p = self._p(path)
        os.rename(p, os.path.join(os.path.dirname(p), newname))

    async def link(self, src, dst):
        raise Gone("a local directory cannot link")

    async def read_file(self, path):
        try:
            with open(self._p(path), "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None

    async def append(self, path, data):
        fd = os.open(self._p(path), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)

    async def sync(self):
        os.sync()

    async def create(self, parent, name, mode):
        return os.open(os.path.join(self._p(parent), name), os.O_RDWR | os.O_CREAT | os.O_EXCL,
                       0o600), 0

    async def write(self, fd, off, data):
        os.pwrite(fd, data, off)

    async def read(self, fd, off, n):
        return os.pread(fd, n, off)

    async def truncate(self, fd, length):
        os.ftruncate(fd, length)

    async def close_file(self, fd):
        os.close(fd)

    async def setattr(self, fd, e, length=None):
        if length is not None:
            os.ftruncate(fd, length)
        os.fchmod(fd, e[E_MODE] & 0o777)
        os.utime(fd, ns=(e[E_MTIME], e[E_MTIME]))

    async def setattr_path(self, path, e):
        p = self._p(path)
        os.chmod(p, e[E_MODE] & 0o777)
        os.utime(p, ns=(e[E_MTIME], e[E_MTIME]))

    async def map_get(self, path, qpaths):
        return {}

    async def map_put(self, path, pairs):
        pass


class _LocalStat:
    __slots__ = ("name", "mode", "length", "qpath")

    def __init__(self, name, st):
        self.name = name
        self.mode = (DMDIR if statmod.S_ISDIR(st.st_mode) else 0) | (st.st_mode & 0o777)
        self.length = st.st_size
        self.qpath = 0


def _runs(sorted_keys, gap):
    """[lo, hi) ranges covering sorted integers, merging neighbours at most `gap` apart."""
    out = []
    for k in sorted_keys:
        if out and k - out[-1][1] <= gap:
            out[-1][1] = k + 1
        else:
            out.append([k, k + 1])
    return out


QPATH_MASK = (1 << QPATH_BITS) - 1


def _qpath(st):
    """The file's path in rip: its qid.path without the qid space of the archive it is shown
    in (each archive is a link of the one before, format.py), so the map's key stays the
    same from one day to the next."""
    q = getattr(st, "qid", None)
    return (q.path if q is not None else st.qpath) & QPATH_MASK


def _isdir(mode):
    return bool(mode & DMDIR)


# --- the archiver --------------------------------------------------------------------------


class Archive:
    """One run: the hello, a reader of 9pix's blocks, a destination."""

    def __init__(self, hello_msg, reader, dest, out=None, pause=None):
        self.h = hello_msg
        self.reader = reader
        self.dest = dest
        self.cap = payload_capacity(hello_msg["bsize"])
        self.era = hello_msg["era"]
        self.name = hello_msg["name"]
        self.out = out or (lambda msg: None)
        self.pause = pause
        self.src_pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="arch-src")
        self.gate = asyncio.Semaphore(PARALLEL)
        self.newmap = []            # (rip qid.path, source qid.path) of what this run created
        self.stats = {"files": 0, "dirs": 0, "removed": 0, "renamed": 0, "bytes": 0,
                      "blocks": 0}
        self.t0 = time.monotonic()
        self.last_progress = 0.0
        self.path = None
        self.since = -1

    async def src(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.src_pool, fn, *args)

    def progress(self, force=False, **extra):
        now = time.monotonic()
        if force or now - self.last_progress >= 1.0:
            self.last_progress = now
            self.stats["blocks"] = self.reader.disk.requests
            self.out({"progress": dict(self.stats, path=self.path, since=self.since, **extra)})

    async def paused(self):
        """The test hook (docs/arch.md): stop after N files while the pause file exists."""
        p = self.pause
        if p is None or not os.path.exists(p):
            return
        try:
            with open(p) as f:
                n = int(f.read().strip() or "0")
        except (OSError, ValueError):
            return
        if self.stats["files"] < n:
            return
        self.progress(force=True, paused=True)
        while os.path.exists(p):
            await asyncio.sleep(0.05)
        self.progress(force=True, paused=False)

    # --- the run ---------------------------------------------------------------------------

    async def run(self):
        h = self.h
        name, day = self.name, h["day"]
        yyyy, mmdd = day[:4], day[4:]
        d = self.dest
        meta = f"{name}/.arch"
        for p in (name, meta, f"{name}/{yyyy}"):
            if await d.stat(p) is None:
                await d.mkdir(p)
        if d.can_link and await d.stat(f"{meta}/qids") is None:
            f, _ = await d.create(meta, "qids", 0o644)
            await d.close_file(f)
        prev = await self.previous(meta)
        await self.remove_partials(name)
        taken = await d.listdir(f"{name}/{yyyy}")
        final = mmdd
        k = 0
        while final in taken:
            k += 1
            final = f"{mmdd}.{k}"
        partial = f"{name}/{yyyy}/{final}.partial"
        self.path = f"{name}/{yyyy}/{final}"
        self.since = -1
        if prev is not None and d.can_link:
            await d.link(prev[0], partial)
            self.since = prev[1]
        else:
            await d.mkdir(partial)
        self.progress(force=True)
        root = h["root"]
        await self.directory(root, partial, self.since)
        await d.map_put(f"{meta}/qids", self.newmap)
        await d.rename(partial, final)
        s = self.stats
        secs = time.monotonic() - self.t0
        await d.append(f"{meta}/log", (
            f"{yyyy}/{final} era {self.era} since {self.since} files {s['files']} dirs "
            f"{s['dirs']} removed {s['removed']} bytes {s['bytes']} secs {secs:.2f} "
            f"source {self.source_id()}\n").encode())
        await d.sync()
        self.stats["blocks"] = self.reader.disk.requests
        return dict(self.stats, path=self.path, era=self.era, since=self.since, secs=secs)

    def source_id(self):
        h = self.h
        return f"{h['owner']}:{h['nblocks']}:{h['bsize']}"

    async def previous(self, meta):
        """(path, era) of the newest archive the log names that still exists and was taken
        from this disk at or before this era; None when there is none (a full copy)."""
        text = await self.dest.read_file(f"{meta}/log")
        if not text:
            return None
        for line in reversed(text.decode("utf-8", "replace").splitlines()):
            w = line.split()
            if len(w) < 3 or len(w) % 2 == 0:
                continue
            kv = dict(zip(w[1::2], w[2::2]))
            try:
                era = int(kv["era"])
            except (KeyError, ValueError):
                continue
            if kv.get("source") != self.source_id() or era > self.era:
                return None     # another disk, or this one formatted again: copy whole
            path = f"{self.name}/{w[0]}"
            if await self.dest.stat(path) is not None:
                return path, era
        return None

    async def remove_partials(self, name):
        """Archives a killed run left half done (their names end in .partial)."""
        for y, st in (await self.dest.listdir(name)).items():
            if not (y.isdigit() and _isdir(st.mode)):
                continue
            for n in await self.dest.listdir(f"{name}/{y}"):
                if n.endswith(".partial"):
                    self.out({"log": f"removing {name}/{y}/{n}, left by an archive that "
                                     f"did not finish"})
                    await self.dest.remove_tree(f"{name}/{y}/{n}")

    # --- directories -------------------------------------------------------------------------

    async def directory(self, e, path, since):
        """Make the directory at path (which exists) hold e's tree.  since < 0: it is empty
        and everything is copied; else it holds the archive of era `since` of the same
        directory, and only what changed after that era is written."""
        if since < 0 or e[E_ERA] > since:
            kids = [k for k in await self.src(dir_entries, self.reader, e)
                    if not k[E_MODE] & DMTMP]       # DMTMP: not archived (stat(5))
            async with asyncio.TaskGroup() as tg:
                if since < 0:
                    for k in kids:
                        tg.create_task(self.new(k, path))
                else:
                    for job in await self.changes(kids, path, since):
                        tg.create_task(job)
            self.stats["dirs"] += 1
        async with self.gate:
            await self.dest.setattr_path(path, e)

    async def changes(self, kids, path, since):
        """Remove and rename in the destination directory now; return the copies to make."""
        d = self.dest
        have = await d.listdir(path)
        src = {k[E_NAME]: k for k in kids}
        gone = [n for n in have if n not in src]
        check = [n for n, k in src.items() if n in have and k[E_ERA] > since
                 and _isdir(k[E_MODE]) == _isdir(have[n].mode)]
        ident = await d.map_get(f"{self.name}/.arch/qids",
                                [_qpath(have[n]) for n in check + gone])
        moved = {}                  # (source qid.path, isdir) -> a gone name archived from it
        for n in gone:
            sp = ident.get(_qpath(have[n]))
            if sp:
                moved.setdefault((sp, _isdir(have[n].mode)), n)
        removes, renames, jobs = [], [], []
        for n, k in src.items():
            old = have.get(n)
            kdir = _isdir(k[E_MODE])
            if old is not None and _isdir(old.mode) == kdir:
                if k[E_ERA] <= since:
                    continue        # unchanged since the previous archive: linked as it is
                if ident.get(_qpath(old)) == k[E_PATH]:
                    jobs.append(self.update(k, path, old, since))
                    continue
            if old is not None:
                removes.append(n)   # another file took the name, or the type changed
            m = moved.pop((k[E_PATH], kdir), None) if k[E_ERA] > since else None
            if m is not None:
                renames.append((m, n))
                jobs.append(self.update(k, path, have[m], since))
            else:
                jobs.append(self.new(k, path))
        used = {m for m, _ in renames}
        removes += [n for n in gone if n not in used]
        for n in removes:
            gone_files = await d.remove_tree(f"{path}/{n}")
            self.stats["removed"] += gone_files     # (added after the await: tasks interleave)
        for m, n in renames:
            await d.rename(f"{path}/{m}", n)
            self.stats["renamed"] += 1
        return jobs

    async def new(self, k, parent):
        name = k[E_NAME]
        if _isdir(k[E_MODE]):
            async with self.gate:
                q = await self.dest.mkdir(f"{parent}/{name}")
            self.newmap.append((q & QPATH_MASK, k[E_PATH]))
            await self.directory(k, f"{parent}/{name}", -1)
        else:
            async with self.gate:
                f, q = await self.dest.create(parent, name, k[E_MODE])
                try:
                    await self.copy(f, k, -1, 0)
                finally:
                    await self.dest.close_file(f)
            self.newmap.append((q & QPATH_MASK, k[E_PATH]))
        self.progress()

    async def update(self, k, parent, old, since):
        name = k[E_NAME]
        path = f"{parent}/{name}"
        if _isdir(k[E_MODE]):
            await self.directory(k, path, since)
            return
        async with self.gate:
            f = await self.dest.open(path, old)     # a renamed file is already at path
            try:
                await self.copy(f, k, since, old.length)
            finally:
                await self.dest.close_file(f)
        self.progress()

    # --- files -------------------------------------------------------------------------------

    async def copy(self, f, k, since, oldlen):
        """Write into open file f what changed in k after era since (everything when < 0);
        f held the archived file of that era, oldlen bytes long."""
        d, cap = self.dest, self.cap
        length = k[E_LENGTH]
        nblk = -(-length // cap)
        blocks, holes = await self.src(changed_blocks, self.reader, k, since)
        if since >= 0:
            if length < oldlen:
                await d.truncate(f, length)
            # A hole in a rewritten pointer block may cover data the old file had (a shrink
            # then a write past the end): what the archive holds there must read as zeros.
            keep = min(length, oldlen)
            for lo, hi in holes:
                await self.zero(f, lo * cap, min(hi * cap, keep))
        blocks = [b for b in blocks if b[0] < nblk]
        for i in range(0, len(blocks), CHUNK):
            run = blocks[i:i + CHUNK]
            payloads = await self.src(read_data, self.reader, [(a, ea) for _, a, ea in run])
            j = 0
            while j < len(run):     # consecutive blocks go out as one write
                k2 = j + 1
                while k2 < len(run) and run[k2][0] == run[k2 - 1][0] + 1:
                    k2 += 1
                off = run[j][0] * cap
                data = b"".join(payloads[j:k2])[:length - off]
                await d.write(f, off, data)
                self.stats["bytes"] += len(data)
                j = k2
        await d.setattr(f, k, length=length)
        self.stats["files"] += 1
        await self.paused()

    async def zero(self, f, lo, hi):
        cap = self.cap
        for off in range(lo, hi, CHUNK * cap):
            n = min(CHUNK * cap, hi - off)
            old = await self.dest.read(f, off, n)
            for b in range(0, len(old), cap):
                piece = old[b:b + cap]
                if any(piece):
                    await self.dest.write(f, off + b, bytes(len(piece)))
                    self.stats["bytes"] += len(piece)


# --- the program ---------------------------------------------------------------------------


def emit(msg):
    try:
        sys.stdout.write(json.dumps(msg) + "\n")
        sys.stdout.flush()
    except OSError:         # 9pix is gone; the exit status still tells
        pass


def open_dest(dest):
    """A local directory (an existing one named with a '/'), else a 9P address: a dial
    string or a service posted in the name space directory (creepy.ninep.dial)."""
    if "/" in dest and os.path.isdir(dest):
        return DestDir(dest)
    return Dest9P(dest)


async def archive(sock, dest_override=None, out=emit):
    loop = asyncio.get_running_loop()
    kind, body = await loop.run_in_executor(None, read_frame, sock)
    if kind != HELLO:
        raise EOFError(f"9pix sent {kind!r} before its hello")
    h = msgpack.unpackb(bytes(body), raw=False)
    if h.get("version") != PROTO_VERSION:
        raise EOFError(f"9pix speaks arch protocol {h.get('version')}, not {PROTO_VERSION}")
    if dest_override:
        h["dest"] = dest_override
    reader = TreeReader(PipeDisk(sock, h["bsize"]), h["bsize"], h["era"])
    dest = open_dest(h["dest"])
    await dest.connect()
    a = Archive(h, reader, dest, out, pause=os.environ.get("CREEPY_ARCH_PAUSE"))
    try:
        return await a.run()
    finally:
        a.src_pool.shutdown(wait=False)
        await dest.close()


def main(argv=None):
    ap = argparse.ArgumentParser(prog="creepy arch", description=(
        "archive a commit of 9pix into the WORM; started by 9pix (console: arch name hour "
        "[path]), never by hand"))
    ap.add_argument("-D", action="store_true", help="debug: copy progress to standard error")
    ap.add_argument("dir", nargs="?", help="destination, instead of the one 9pix names")
    a = ap.parse_args(argv)
    try:
        sock = socket.socket(fileno=os.dup(0))
    except OSError:
        print("creepy arch: standard input is not a pipe to creepy 9pix; arch is started by "
              "9pix (its console: arch name hour [path], arch now)", file=sys.stderr)
        return 2
    t0 = time.monotonic()
    try:
        def traced(msg):
            emit(msg)
            print(f"creepy arch: {json.dumps(msg)}", file=sys.stderr, flush=True)
        result = asyncio.run(archive(sock, a.dir, traced if a.D else emit))
    except BaseException as e:      # every failure is reported to 9pix, then the exit status
        if isinstance(e, KeyboardInterrupt):
            raise
        why = _why(e)
        emit({"result": {"error": why, "secs": time.monotonic() - t0}})
        print(f"creepy arch: {why}", file=sys.stderr)
        return 1
    emit({"result": result})
    return 0


def _why(e):
    if isinstance(e, BaseExceptionGroup):
        return "; ".join(_why(x) for x in e.exceptions[:3])
    return str(e) or type(e).__name__
