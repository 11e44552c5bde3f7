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
import collections
import concurrent.futures
import json
import os
import resource
import socket
import stat as statmod
import struct
import sys
import time

import msgpack

from creepy.errors import CorruptBlock
from creepy.ninep import dial
from creepy.ninep.client import Client, Error9P, nochange
from creepy.ninep.codec import MAXWELEM
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
PARALLEL = 16                  # entries being written at once
BATCH = 64                     # files removed at once
SHOWN = 8                      # names shown at each end of a deeper path in a message
QIDS_ENTRY = struct.Struct("<Q")
MAP_PAGE = 512                 # qid map entries read at once (4 KiB)
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
#
# A destination is reached through directory handles: a fid walked to a directory (9P), or a
# file descriptor open on one (a local directory).  Every operation names one entry of one
# directory by its handle, so what it costs does not grow with the depth of the tree, and no
# path longer than a name is ever sent or resolved.  Which handles arch holds is the
# business of Places, below.


class Gone(Exception):
    pass


class Dest9P:
    """rip (or any 9P server with a wormwr attach and a console link command).

    A directory handle is a fid walked to the directory and never opened (walk(5) refuses
    to walk from an open fid); a file handle is an open fid."""

    can_link = True
    handles = 1024          # directory fids held at once: rip takes 65,536 per connection

    def __init__(self, addr):
        self.addr = addr
        self.c = None
        self.main = None
        self.top = None

    async def connect(self):
        try:
            self.c = await Client.connect(self.addr, aname="wormwr")
        except (OSError, ValueError) as e:
            raise Gone(f"cannot reach the WORM at {self.addr}: "
                       f"{getattr(e, 'strerror', None) or e}") from None
        self.top = self.c.root
        self.main = self.c.alloc_fid()
        await self.c.attach(self.main, dial.getuser(), "main")

    async def close(self):
        if self.c is not None:
            await self.c.close()

    # directories: d is a directory handle, name one entry of it
    async def walk(self, d, names):
        """A new handle for the directory that names lead to from d."""
        return await self.c.walkpath("/".join(names), d)

    async def release(self, d):
        self.c.clunk_soon(d)        # nothing waits for it: a tree's worth of round trips

    async def stat(self, d, name):
        try:
            return await self.c.stat_path(name, fid=d)
        except Error9P:
            return None

    async def listdir(self, d):
        f = await self.c.walkpath("", d)
        try:
            await self.c.open(f, 0)     # OREAD
            return {st.name: st for st in await self.c.dirreadall(f)}
        finally:
            self.c.clunk_soon(f)

    async def mkdir(self, d, name):
        f = await self.c.walkpath("", d)
        try:
            qid, _ = await self.c.create(f, name, DMDIR | 0o775, 0)    # OREAD
        finally:
            self.c.clunk_soon(f)
        return qid.path

    async def remove(self, d, name):
        """Remove a file or an empty directory (9P removes no other)."""
        await self.c.remove_path(name, fid=d)

    async def unprotect(self, d, name):
        pass                # wormwr's users may change anything whatever its mode

    async def rename(self, d, name, newname):
        await self.c.rename(name, newname, fid=d)

    async def link(self, src, dst):
        out = await self.c.cons(f"link {src} {dst}", fid=self.main, timeout=120)
        if "linked" not in out:
            raise Gone(f"rip: link {src} {dst}: {out.strip()}")

    async def read_file(self, d, name):
        try:
            return await self.c.read_file(name, fid=d)
        except Error9P:
            return None

    async def append(self, d, name, data):
        await self.c.append(name, data, fid=d)

    async def sync(self):
        await self.c.sync_file("")

    # files: a handle is an open fid
    async def create(self, d, name, mode):
        f = await self.c.walkpath("", d)
        try:
            # a symbolic link is archived as what it is: a file whose content is its target
            qid, _ = await self.c.create(f, name, mode & (0o777 | DMSYMLINK), 2)  # ORDWR
        except BaseException:
            await self._clunk(f)
            raise
        return f, qid.path

    async def open(self, d, name, old):
        f = await self.c.walkpath(name, d)
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
        """Mode, mtime, owner and group of entry e (and a length) on a file or a directory."""
        await self._wstat(f, mode=e[E_MODE], mtime=e[E_MTIME] // 1_000_000_000, uid=e[E_UID],
                          gid=e[E_GID], **({} if length is None else {"length": length}))

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

    async def open_map(self, d, name):
        """The qid map file in directory d, open for reading and writing (made if missing)."""
        st = await self.stat(d, name)
        if st is None:
            return (await self.create(d, name, 0o644))[0]
        return await self.open(d, name, st)


class DestDir:
    """A local directory: any other file server, mounted.  No link: every archive is a full
    copy.  Mode bits and mtime are kept; owner and group are not (they are Plan 9 names).

    A directory handle is a file descriptor open on the directory, and every call names an
    entry relative to one (openat, mkdirat, fstatat, unlinkat, renameat, fchmodat), so a tree
    deeper than PATH_MAX allows in one path is archived whole."""

    can_link = False

    def __init__(self, root):
        self.root = root
        self.top = None
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft == resource.RLIM_INFINITY:
            soft = 4096
        self.handles = max(16, min(1024, soft // 4))    # directory descriptors held at once

    async def connect(self):
        try:
            self.top = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as e:
            raise Gone(f"{self.root}: {e.strerror}") from None

    async def close(self):
        if self.top is not None:
            os.close(self.top)
            self.top = None

    async def walk(self, d, names):
        fd = d
        try:
            for n in names:
                nfd = os.open(n, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
                if fd != d:
                    os.close(fd)
                fd = nfd
        except BaseException:
            if fd != d:
                os.close(fd)
            raise
        return fd if fd != d else os.dup(d)

    async def release(self, d):
        os.close(d)

    async def stat(self, d, name):
        try:
            return _LocalStat(name, os.stat(name, dir_fd=d, follow_symlinks=False))
        except FileNotFoundError:
            return None

    async def listdir(self, d):
        with os.scandir(d) as it:
            return {e.name: _LocalStat(e.name, e.stat(follow_symlinks=False)) for e in it}

    async def mkdir(self, d, name):
        os.mkdir(name, 0o775, dir_fd=d)
        return 0

    async def remove(self, d, name):
        try:
            os.unlink(name, dir_fd=d)
        except IsADirectoryError:
            os.rmdir(name, dir_fd=d)

    async def unprotect(self, d, name):
        """Let a directory archived read-only be listed and emptied (to be removed)."""
        os.chmod(name, 0o755, dir_fd=d)

    async def rename(self, d, name, newname):
        os.rename(name, newname, src_dir_fd=d, dst_dir_fd=d)

    async def link(self, src, dst):
        raise Gone("a local directory cannot link")

    async def read_file(self, d, name):
        try:
            fd = os.open(name, os.O_RDONLY, dir_fd=d)
        except FileNotFoundError:
            return None
        with open(fd, "rb") as f:
            return f.read()

    async def append(self, d, name, data):
        fd = os.open(name, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644, dir_fd=d)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)

    async def sync(self):
        os.sync()

    async def create(self, d, name, mode):
        return os.open(name, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600, dir_fd=d), 0

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


class _LocalStat:
    __slots__ = ("name", "mode", "length", "qpath")

    def __init__(self, name, st):
        self.name = name
        self.mode = (DMDIR if statmod.S_ISDIR(st.st_mode) else 0) | (st.st_mode & 0o777)
        self.length = st.st_size
        self.qpath = 0


def _runs(sorted_keys):
    """[lo, hi) ranges covering sorted integers, one per run of consecutive ones."""
    out = []
    for k in sorted_keys:
        if out and k == out[-1][1]:
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


def _strerror(e):
    """An OSError's or a 9P error's text, for a message that says where it happened."""
    return getattr(e, "strerror", None) or str(e)


# --- arch's half: the handles it holds in the destination -----------------------------------


class Place:
    """A directory of the destination: the Place of its parent and its name there.  It holds
    a handle while Places keeps one for it; its path is made only to be shown."""

    __slots__ = ("parent", "name", "depth", "handle", "users", "walking", "done")

    def __init__(self, parent, name):
        self.parent = parent
        self.name = name
        self.depth = 0 if parent is None else parent.depth + 1
        self.handle = None
        self.users = 0              # callers between get() and put()
        self.walking = None         # a future while a walk to it is under way
        self.done = False           # nothing will use it again: its handle goes at once

    def __str__(self):
        names = []
        p = self
        while p.parent is not None:
            names.append(p.name)
            p = p.parent
        if len(names) > 2 * SHOWN:
            names[SHOWN:-SHOWN] = [f"...{len(names) - 2 * SHOWN} more..."]
        return "/".join(reversed(names))


class Places:
    """The directory handles arch holds in the destination: at most dest.handles at once,
    however deep or wide the tree (DESIGN invariants 10 and 11).

    A place without a handle gets one by a walk from its nearest ancestor that holds one, at
    most MAXWELEM names a walk, and the place at the end of each walk keeps its handle.  When
    more than the bound are held, an idle handle goes: the one whose place's depth has the
    fewest trailing zero bits, oldest first, so the ancestors kept thin out evenly (every
    second level, then every fourth...) and finding a directory again costs one walk of a
    few names, never one from the top.  A place that is done lets its handle go at once."""

    def __init__(self, dest):
        self.dest = dest
        self.limit = dest.handles
        self.top = Place(None, "")
        self.top.handle = dest.top              # the destination's own: never let go
        self.held = 0
        self.idle = [collections.OrderedDict() for _ in range(64)]  # by trailing zero bits

    async def get(self, p):
        """p's handle, for the caller to use until put(p)."""
        while p.handle is None and p.walking is not None:
            await asyncio.shield(p.walking)
        if p.handle is not None:
            self._use(p)
            return p.handle
        p.walking = fut = asyncio.get_running_loop().create_future()
        try:
            return await self._walk(p)
        finally:
            p.walking = None
            fut.set_result(None)

    async def put(self, p):
        p.users -= 1
        if p.users == 0 and p.parent is not None:
            if p.done:
                await self._release(p)
            else:
                self.idle[_tz(p.depth)][p] = None
        await self._trim()

    async def done(self, p):
        """Nothing below p will be written again: its handle can go."""
        p.done = True
        if p.users == 0 and p.handle is not None:
            self.idle[_tz(p.depth)].pop(p, None)
            await self._release(p)

    def _use(self, p):
        if p.users == 0 and p.parent is not None:
            self.idle[_tz(p.depth)].pop(p, None)
        p.users += 1

    async def _walk(self, p):
        """Walk to p from its nearest ancestor holding a handle; p is left in use."""
        path = []
        a = p
        while a.handle is None:
            path.append(a)
            a = a.parent
        path.reverse()
        self._use(a)
        base = a
        try:
            for i in range(0, len(path), MAXWELEM):
                step = path[i:i + MAXWELEM]
                end = step[-1]
                h = await self.dest.walk(base.handle, [x.name for x in step])
                if end.handle is None:
                    end.handle = h
                    self.held += 1
                else:                           # another walk got there meanwhile
                    await self.dest.release(h)
                self._use(end)
                prev, base = base, end
                await self.put(prev)
        except BaseException:
            await self.put(base)
            raise
        return p.handle

    async def _release(self, p):
        h, p.handle = p.handle, None
        self.held -= 1
        await self.dest.release(h)

    async def _trim(self):
        while self.held > self.limit:
            for bucket in self.idle:
                if bucket:
                    victim, _ = bucket.popitem(last=False)
                    await self._release(victim)
                    break
            else:
                return                          # every handle is in use


def _tz(depth):
    """Trailing zero bits of a depth (1 and up)."""
    return (depth & -depth).bit_length() - 1


# --- the archiver --------------------------------------------------------------------------


class Job:
    """One entry of the source to write into the destination: k, its directory entry; up,
    the Job of the directory holding it (None for the top); since, as for write_tree; old,
    the stat of the archived entry it updates (None: it is new).  A directory's Job also has
    its Place and the number of its entries still being written (waiting)."""

    __slots__ = ("k", "up", "since", "old", "place", "waiting")

    def __init__(self, k, up, since, old, place=None):
        self.k = k
        self.up = up
        self.since = since
        self.old = old
        self.place = place
        self.waiting = 0


class Archive:
    """One run: the hello, a reader of 9pix's blocks, a destination."""

    def __init__(self, hello_msg, reader, dest, out=None, pause=None):
        self.h = hello_msg
        self.reader = reader
        self.dest = dest
        self.places = Places(dest)
        self.cap = payload_capacity(hello_msg["bsize"])
        self.era = hello_msg["era"]
        self.name = hello_msg["name"]
        self.out = out or (lambda msg: None)
        self.pause = pause
        self.src_pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="arch-src")
        self.qids = None            # the qid map, open (a destination that can link)
        self.pages = {}             # pages of it read: page number -> bytes
        self.newmap = []            # (rip qid.path, source qid.path) of what this run created
        self.stats = {"files": 0, "dirs": 0, "removed": 0, "renamed": 0, "bytes": 0,
                      "blocks": 0}
        self.t0 = time.monotonic()
        self.last_progress = 0.0
        self.path = None
        self.since = -1

    async def src(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.src_pool, fn, *args)

    async def hold(self, place):
        """place's handle, held until places.put(place); an error names the place."""
        try:
            return await self.places.get(place)
        except (Error9P, OSError) as e:
            raise Gone(f"walk {place}: {_strerror(e)}") from None

    async def on(self, place, op, *args):
        """op(handle of place, *args) in the destination; an error names what and where."""
        h = await self.hold(place)
        try:
            return await op(h, *args)
        except (Error9P, OSError) as e:
            where = f"{place}/{args[0]}" if args and isinstance(args[0], str) else str(place)
            raise Gone(f"{op.__name__} {where}: {_strerror(e)}") from None
        finally:
            await self.places.put(place)

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
        tree = Place(self.places.top, name)
        meta = Place(tree, ".arch")
        year = Place(tree, yyyy)
        for p in (tree, meta, year):
            if await self.on(p.parent, d.stat, p.name) is None:
                await self.on(p.parent, d.mkdir, p.name)
        if d.can_link:
            self.qids = await self.on(meta, d.open_map, "qids")
        prev = await self.previous(tree, meta)
        await self.remove_partials(tree)
        taken = await self.on(year, d.listdir)
        final = mmdd
        k = 0
        while final in taken:
            k += 1
            final = f"{mmdd}.{k}"
        partial = f"{final}.partial"
        self.path = f"{name}/{yyyy}/{final}"
        self.since = -1
        if prev is not None and d.can_link:
            await d.link(prev[0], f"{self.path}.partial")
            self.since = prev[1]
        else:
            await self.on(year, d.mkdir, partial)
        self.progress(force=True)
        await self.write_tree(h["root"], Place(year, partial), self.since)
        if self.qids is not None:
            await self.map_put(self.newmap)
            await d.close_file(self.qids)
            self.qids = None
        await self.on(year, d.rename, partial, final)
        s = self.stats
        secs = time.monotonic() - self.t0
        await self.on(meta, d.append, "log", (
            f"{yyyy}/{final} era {self.era} since {self.since} files {s['files']} dirs "
            f"{s['dirs']} removed {s['removed']} bytes {s['bytes']} secs {secs:.2f} "
            f"source {self.source_id()}\n").encode())
        await d.sync()
        self.stats["blocks"] = self.reader.disk.requests
        return dict(self.stats, path=self.path, era=self.era, since=self.since, secs=secs)

    def source_id(self):
        h = self.h
        return f"{h['owner']}:{h['nblocks']}:{h['bsize']}"

    async def previous(self, tree, meta):
        """(path, era) of the newest archive the log names that still exists and was taken
        from this disk at or before this era; None when there is none (a full copy)."""
        d = self.dest
        text = await self.on(meta, d.read_file, "log")
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
            y, _, mmdd = w[0].partition("/")
            if (y.isdigit() and mmdd and "/" not in mmdd
                    and await self.on(tree, d.stat, y) is not None
                    and await self.on(Place(tree, y), d.stat, mmdd) is not None):
                return f"{self.name}/{w[0]}", era
        return None

    async def remove_partials(self, tree):
        """Archives a killed run left half done (their names end in .partial)."""
        for y, st in (await self.on(tree, self.dest.listdir)).items():
            if not (y.isdigit() and _isdir(st.mode)):
                continue
            year = Place(tree, y)
            for n, nst in (await self.on(year, self.dest.listdir)).items():
                if n.endswith(".partial"):
                    self.out({"log": f"removing {year}/{n}, left by an archive that did not "
                                     f"finish"})
                    await self.remove_tree(year, n, nst)

    async def remove_tree(self, place, name, st):
        """Remove name in the directory at place and everything below it (9P removes only
        empty directories); return how many files and directories went.  A walk with a
        stack of its own, so any depth; the files of a directory go BATCH at a time."""
        d = self.dest
        if not _isdir(st.mode):
            await self.on(place, d.remove, name)
            return 1
        await self.on(place, d.unprotect, name)
        n = 0
        stack = [[Place(place, name), None]]    # [a directory, its subdirectories left]
        while stack:
            frame = stack[-1]
            p, dirs = frame
            if dirs is None:
                kids = await self.on(p, d.listdir)
                files = [k for k, s in kids.items() if not _isdir(s.mode)]
                for i in range(0, len(files), BATCH):
                    await asyncio.gather(*(self.on(p, d.remove, k)
                                           for k in files[i:i + BATCH]))
                n += len(files)
                dirs = frame[1] = [k for k, s in kids.items() if _isdir(s.mode)]
            if dirs:
                k = dirs.pop()
                await self.on(p, d.unprotect, k)
                stack.append([Place(p, k), None])
                continue
            stack.pop()
            await self.places.done(p)
            await self.on(p.parent, d.remove, p.name)
            n += 1
        return n

    # --- the tree ----------------------------------------------------------------------------

    async def write_tree(self, e, place, since):
        """Make the directory at place (which exists) hold e's tree.  since < 0: it is empty
        and everything is copied; else it holds the archive of era `since` of the same
        directory, and only what changed after that era is written.

        Entries are written by PARALLEL workers taking Jobs from one stack, newest first
        (depth first, so few wait at once); a directory's attributes are set when the last
        of its entries is written.  Nothing recurses, whatever the depth of the tree."""
        stack = [Job(e, None, since, None, place)]
        busy = 0
        idle = collections.deque()      # a future for each worker waiting for a job

        def wake(n):
            while n > 0 and idle:
                f = idle.popleft()
                if not f.done():
                    f.set_result(None)
                    n -= 1

        async def worker():
            nonlocal busy
            while True:
                if not stack:
                    if not busy:            # nothing left, and nothing will come
                        wake(len(idle))
                        return
                    f = asyncio.get_running_loop().create_future()
                    idle.append(f)
                    await f
                    continue
                job = stack.pop()
                busy += 1
                try:
                    more = await self.write_entry(job)
                finally:
                    busy -= 1
                stack.extend(reversed(more))
                wake(len(more))

        try:
            async with asyncio.TaskGroup() as tg:
                for _ in range(PARALLEL):
                    tg.create_task(worker())
        except BaseExceptionGroup as g:
            if len(g.exceptions) == 1:      # the usual case: one failed, the rest were stopped
                raise g.exceptions[0] from None
            raise

    async def write_entry(self, job):
        """Write one entry; return the Jobs for a directory's entries, to be written next."""
        k = job.k
        if not _isdir(k[E_MODE]):
            if job.old is None:
                await self.new_file(job)
            else:
                await self.update_file(job)
            self.progress()
            await self.written(job.up)
            return []
        since = job.since
        changed = since < 0 or k[E_ERA] > since
        # the source is read while the destination works (one round trip each, per level)
        listing = asyncio.ensure_future(self.src(dir_entries, self.reader, k)) if changed else None
        if job.place is None:
            job.place = Place(job.up.place, k[E_NAME])
            if job.old is None:
                try:
                    q = await self.on(job.up.place, self.dest.mkdir, k[E_NAME])
                except BaseException:
                    if listing is not None:
                        listing.cancel()
                    raise
                self.newmap.append((q & QPATH_MASK, k[E_PATH]))
        kids = []
        if changed:
            ents = [x for x in await listing if not x[E_MODE] & DMTMP]   # DMTMP: not archived
            if since < 0:
                kids = [Job(x, job, -1, None) for x in ents]
            else:
                kids = await self.changes(ents, job)
            self.stats["dirs"] += 1
        self.progress()
        job.waiting = len(kids)
        if not kids:
            await self.complete(job)
        return kids

    async def written(self, job):
        """One more entry of job's directory is written."""
        job.waiting -= 1
        if not job.waiting:
            await self.complete(job)

    async def complete(self, job):
        """Everything in job's directory is written: set its attributes (last, for its mtime
        moves when its entries change) and let its handle go; and the same for each parent
        whose last entry it was.  Such a chain (a deep tree ends in one) is set PARALLEL
        directories at a time, deepest first; in each batch every handle is taken before any
        attribute is set, so that no walk passes a directory already made read-only."""
        chain = [job]
        while job.up is not None:
            job = job.up
            job.waiting -= 1
            if job.waiting:
                break
            chain.append(job)
        places = self.places
        for i in range(0, len(chain), PARALLEL):
            batch = chain[i:i + PARALLEL]
            got = await asyncio.gather(*(self.hold(j.place) for j in batch),
                                       return_exceptions=True)
            try:
                for r in got:
                    if isinstance(r, BaseException):
                        raise r
                await asyncio.gather(*(self.dest.setattr(h, j.k) for h, j in zip(got, batch)))
            except (Error9P, OSError) as e:
                raise Gone(f"wstat {batch[0].place}: {_strerror(e)}") from None
            finally:
                for j, r in zip(batch, got):
                    if not isinstance(r, BaseException):
                        await places.put(j.place)
            for j in batch:
                await places.done(j.place)

    async def changes(self, kids, job):
        """Remove and rename in job's directory now; return the Jobs for the copies to make."""
        d, place, since = self.dest, job.place, job.since
        have = await self.on(place, d.listdir)
        src = {k[E_NAME]: k for k in kids}
        gone = [n for n in have if n not in src]
        check = [n for n, k in src.items() if n in have and k[E_ERA] > since
                 and _isdir(k[E_MODE]) == _isdir(have[n].mode)]
        ident = await self.map_get([_qpath(have[n]) for n in check + gone])
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
                    jobs.append(Job(k, job, since, old))
                    continue
            if old is not None:
                removes.append(n)   # another file took the name, or the type changed
            m = moved.pop((k[E_PATH], kdir), None) if k[E_ERA] > since else None
            if m is not None:
                renames.append((m, n))
                jobs.append(Job(k, job, since, have[m]))
            else:
                jobs.append(Job(k, job, -1, None))
        used = {m for m, _ in renames}
        removes += [n for n in gone if n not in used]
        for n in removes:
            gone_files = await self.remove_tree(place, n, have[n])
            self.stats["removed"] += gone_files     # (added after the await: tasks interleave)
        for m, n in renames:
            await self.on(place, d.rename, m, n)
            self.stats["renamed"] += 1
        return jobs

    # the qid map: rip's qid.path -> the source's, 8 bytes at 8 * rip qid.path

    async def map_get(self, qpaths):
        """{rip qid.path: source qid.path (0: unknown)} for qpaths.  The map is read a page
        (MAP_PAGE entries) at a time, and pages are kept for the run: an entry is written
        once, at the end of the run that created its file, and never changes."""
        want = sorted({q // MAP_PAGE for q in qpaths} - self.pages.keys())
        size = MAP_PAGE * QIDS_ENTRY.size
        try:
            for lo, hi in _runs(want):
                raw = await self.dest.read(self.qids, lo * size, (hi - lo) * size)
                for pg in range(lo, hi):
                    self.pages[pg] = raw[(pg - lo) * size:(pg - lo + 1) * size]
        except Error9P as e:
            raise Gone(f"read {self.name}/.arch/qids: {e}") from None
        out = {}
        for q in qpaths:
            page = self.pages[q // MAP_PAGE]
            at = q % MAP_PAGE * QIDS_ENTRY.size
            if at + QIDS_ENTRY.size <= len(page):
                out[q] = QIDS_ENTRY.unpack_from(page, at)[0]
        return out

    async def map_put(self, pairs):
        pairs = dict(pairs)
        try:
            for lo, hi in _runs(sorted(pairs)):
                data = b"".join(QIDS_ENTRY.pack(pairs[q]) for q in range(lo, hi))
                await self.dest.write(self.qids, lo * QIDS_ENTRY.size, data)
        except Error9P as e:
            raise Gone(f"write {self.name}/.arch/qids: {e}") from None

    async def new_file(self, job):
        k = job.k
        f, q = await self.on(job.up.place, self.dest.create, k[E_NAME], k[E_MODE])
        try:
            await self.copy(f, job, -1, 0)
        finally:
            await self.dest.close_file(f)
        self.newmap.append((q & QPATH_MASK, k[E_PATH]))

    async def update_file(self, job):
        f = await self.on(job.up.place, self.dest.open, job.k[E_NAME], job.old)
        try:                                        # (a renamed file is already at its name)
            await self.copy(f, job, job.since, job.old.length)
        finally:
            await self.dest.close_file(f)

    # --- files -------------------------------------------------------------------------------

    async def copy(self, f, job, since, oldlen):
        """Write into open file f what changed in job's entry after era since (everything
        when < 0); f held the archived file of that era, oldlen bytes long."""
        try:
            await self._copy(f, job.k, since, oldlen)
        except (Error9P, OSError) as e:
            raise Gone(f"write {job.up.place}/{job.k[E_NAME]}: {_strerror(e)}") from None

    async def _copy(self, f, k, since, oldlen):
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
