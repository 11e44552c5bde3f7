"""creepy mount: a 9P2000 tree as a local file system, through FUSE.

    creepy mount [-f] [-o opt,...] [-A aname] [-u user] addr mountpoint

The kernel's FUSE requests are answered with 9P requests through creepy.ninep.client, one
connection, many requests in flight (pyfuse3's low-level API, run on asyncio: docs/tools.md
says why pyfuse3).  Like plan9port's 9pfuse, and unlike a path-based FUSE layer, every inode
the kernel knows is a 9P file, not a path:

* An inode (``Node``) holds a fid walked to its file, made when first needed and kept, so a
  file stays bound to its fid across renames (walk(5)).  The fids of idle inodes are kept in
  an LRU of at most IDLE_FIDS and re-walked from the parent by name when needed again; the
  qid a walk finds must be the inode's, else the answer is ESTALE (another client replaced
  the file).  Directory listings create inodes without fids (readdirplus gives the kernel
  inodes for every entry; walking each would cost a round trip per entry).
* An open file (``Handle``) is a fid of its own: the inode's fid cloned by a zero-name walk
  and opened, never the inode's fid (walk(5): an open fid must not be walked).  Reads and
  writes go to it at the kernel's offsets, up to the msize the server agreed (1 MiB).
* 9P2000 renames within a directory only (a wstat of the name): a rename across
  directories answers EXDEV, as the Linux kernel's 9P2000 client does, and mv(1) copies.
  Renaming onto an existing name replaces it (an empty directory is removed first).
* An unlinked file that is still open (`-o unlink=hide`, the default) is renamed to a hidden
  name (``.creepy-unlinked-...``) in its directory and removed when its last handle closes,
  as libfuse's high-level layer does; listings and lookups through the mount do not show it.
  `-o unlink=remove` removes it at once, for servers that keep removed files usable through
  the fids that had them open (POSIX's rule).
* statfs reads /stats through a second attach of `main` on the same connection (9P2000 has
  no statfs); a server without one gets zeros.
* When the connection is lost (the server restarted or died), every request fails at once
  with ENOTCONN ("Transport endpoint is not connected") and a line on standard error; at
  most once a second the next request redials, and when the server is back the mount goes
  on: inodes re-walk their fids by name, open files are opened again (without OTRUNC).  A
  request the server does not answer within `-o timeout` seconds (default 30) fails with
  ETIMEDOUT; nothing waits forever.
* SIGTERM and SIGINT unmount and exit; so does `fusermount -u mountpoint`.  Without -f the
  command returns once the mount is ready and the mount lives on in the background, telling
  syslog (not the terminal) what it would have printed.

Errors: 9P error strings become errnos through errno_of (errors.ERRNO for creepy's strings);
an unknown string becomes EIO and is logged once.  No exception escapes a request: pyfuse3
would end the main loop.

This module is a client: it knows 9P and FUSE, never the server's insides.
"""

import argparse
import asyncio
import collections
import errno
import grp
import os
import pwd
import re
import signal
import stat as statmod
import sys
import syslog
import time
import traceback

from creepy import errors as E
from creepy.ninep import dial
from creepy.ninep.client import DEFAULT_MSIZE, Client, Error9P, nochange
from creepy.ninep.codec import DMDIR, OREAD, ORDWR, OTRUNC, OWRITE, QTDIR, unpack_stat

try:
    import pyfuse3
    import pyfuse3.asyncio
    Operations = pyfuse3.Operations
except ImportError:             # `creepy mount` says how to install it; the rest of creepy works
    pyfuse3 = None
    Operations = object

#: fids of inodes with no open file kept at most (others are clunked, least recently used first)
IDLE_FIDS = 4096
#: reads of an iounit kept in flight ahead of a sequential reader
READ_AHEAD = 4
#: seconds between two attempts to redial a lost server
REDIAL_S = 1.0
#: seconds a dial may take
DIAL_TIMEOUT = 10.0
#: the hidden name an unlinked open file is given until its last close (unlink=hide)
HIDDEN = ".creepy-unlinked-"
NOBODY = 65534
#: what other servers' 9P error strings mean to POSIX (Plan 9's kernel and lib9p, the Linux
#: kernel's table); creepy's own are in errors.ERRNO, beside the strings it sends
FOREIGN_ERRNO = {
    "file not found": errno.ENOENT, "no such file or directory": errno.ENOENT,
    "file exists": errno.EEXIST, "directory not empty": errno.ENOTEMPTY,
    "read-only file system": errno.EROFS, "no space left on device": errno.ENOSPC,
    "file system full": errno.ENOSPC, "operation not permitted": errno.EPERM,
    "is a directory": errno.EISDIR, "interrupted": errno.EINTR,
}


def errno_of(ename):
    """The errno for a 9P error string, or None when no table knows it."""
    code = E.ERRNO.get(ename)
    if code is None:
        code = FOREIGN_ERRNO.get(ename) or FOREIGN_ERRNO.get(ename.lower())
    if code is None and E.errno_of(ename) != errno.EIO:   # creepy's, with detail added
        code = E.errno_of(ename)
    if ename == E.EHALTED:
        code = errno.ENOTCONN       # the server is going away: as a lost connection
    return code


class Fail(Exception):
    """A reason not to mount, said in one line."""


class Node:
    """An inode the kernel knows: a 9P file, and the fid walked to it if there is one."""

    __slots__ = ("ino", "qpath", "isdir", "parent", "name", "fid", "gen", "nlookup", "opens",
                 "pins", "st", "vers", "hidden", "removed", "changes")

    def __init__(self, ino, st, parent, name):
        self.ino = ino
        self.qpath = st.qid.path
        self.isdir = bool(st.qid.type & QTDIR)
        self.parent = parent        # a Node (None for the root): where to walk from by name
        self.name = name
        self.fid = None             # walked to the file, never opened
        self.gen = -1               # the connection the fid belongs to
        self.nlookup = 0            # the kernel's references (lookup, create, readdirplus)
        self.opens = 0              # open handles
        self.pins = 0               # requests using the fid right now
        self.st = st                # the last stat seen
        self.vers = None            # qid.vers when last opened (the page cache is kept if same)
        self.hidden = False         # unlinked while open, renamed to a hidden name
        self.removed = False
        self.changes = 0            # writes and truncates through the mount (read-ahead is
                                    # dropped when this moves)


class Handle:
    """An open file or directory: a fid of its own, opened."""

    __slots__ = ("fh", "node", "fid", "gen", "mode", "entries", "ahead", "next")

    def __init__(self, fh, node, fid, gen, mode):
        self.fh = fh
        self.node = node
        self.fid = fid
        self.gen = gen
        self.mode = mode            # the 9P open mode, OTRUNC dropped (for reopening)
        self.entries = None         # a directory's stats, read at readdir offset 0
        self.ahead = []             # read-ahead: [offset, task reading an iounit there], in order
        self.next = None            # where the last read ended (a read there is sequential)


#: where log() writes: standard error, or syslog once a background mount has let go of it
_syslog = False


def log(msg):
    """One line for the person who mounted: on standard error (-f), else to syslog."""
    if _syslog:
        syslog.syslog(syslog.LOG_NOTICE, msg)
        return
    try:
        print(f"creepy mount: {msg}", file=sys.stderr, flush=True)
    except (OSError, ValueError):     # nobody listens any more: nothing to do
        pass


def fuse_error(e):
    """The FUSEError for an exception a request raised."""
    if isinstance(e, pyfuse3.FUSEError):
        return e
    if isinstance(e, Error9P):
        code = errno_of(e.ename)
        if code is None:
            if e.ename not in _unmapped:
                _unmapped.add(e.ename)
                log(f"9P error {e.ename!r} has no errno; answering EIO")
            code = errno.EIO
        return pyfuse3.FUSEError(code)
    if isinstance(e, ConnectionError):
        return pyfuse3.FUSEError(errno.ENOTCONN)
    if isinstance(e, (asyncio.TimeoutError, TimeoutError)):
        return pyfuse3.FUSEError(errno.ETIMEDOUT)
    if isinstance(e, (UnicodeError, ValueError)):
        return pyfuse3.FUSEError(errno.EINVAL)
    return None


_unmapped = set()


def request(method):
    """Wrap a request handler: a time limit, and every failure an errno (never an exception
    pyfuse3 would stop on)."""
    name = method.__name__

    async def wrapper(self, *args):
        if self.on_first_request is not None:
            self.on_first_request()
            self.on_first_request = None
        try:
            return await asyncio.wait_for(method(self, *args), self.timeout)
        except BaseException as e:
            if isinstance(e, asyncio.CancelledError):
                raise
            fe = fuse_error(e)
            if fe is None:
                log(f"internal error in {name}: {e!r}")
                if self.debug:
                    traceback.print_exc()
                fe = pyfuse3.FUSEError(errno.EIO)
            if isinstance(e, ConnectionError):
                self.conn.lost(e)
            elif isinstance(e, (asyncio.TimeoutError, TimeoutError)):
                log(f"{name}: no answer from the server within {self.timeout:g} s")
            raise fe from None
    wrapper.__name__ = name
    wrapper.__doc__ = method.__doc__
    return wrapper


class Link:
    """The connection to the server, redialled when lost (at most once per REDIAL_S)."""

    def __init__(self, addr, uname, aname, msize):
        self.addr, self.uname, self.aname, self.msize = addr, uname, aname, msize
        self.client = None
        self.gen = 0                # counts connections; fids of older ones are gone
        self.next_dial = 0.0
        self.down = None            # why the connection is down, once it is
        self.lock = None

    async def connect(self):
        c = await asyncio.wait_for(Client.connect(self.addr, msize=self.msize, uname=self.uname,
                                                  aname=self.aname), DIAL_TIMEOUT)
        self.client = c
        self.gen += 1
        return c

    def lost(self, e):
        if self.down is None:
            self.down = str(e) or "connection closed"
            log(f"lost the connection to {self.addr}: {self.down}; requests fail with "
                f"ENOTCONN until it is back")

    async def get(self):
        """The live client, redialling if the connection is gone and it is time to."""
        c = self.client
        if c is not None and not c.closed:
            return c
        if c is not None:
            self.lost(c._error or ConnectionError("connection closed"))
            self.client = None
        if self.lock is None:
            self.lock = asyncio.Lock()
        async with self.lock:
            if self.client is not None:
                return self.client
            now = time.monotonic()
            if now < self.next_dial:
                raise pyfuse3.FUSEError(errno.ENOTCONN)
            self.next_dial = now + REDIAL_S
            try:
                c = await self.connect()
            except (OSError, ConnectionError, Error9P, asyncio.TimeoutError) as e:
                self.lost(e)
                raise pyfuse3.FUSEError(errno.ENOTCONN) from None
            log(f"connected again to {self.addr} (was down: {self.down})")
            self.down = None
            return c


class Fs(Operations):
    """The pyfuse3 operations, over one Link."""

    def __init__(self, conn, *, cache=1.0, timeout=30.0, unlink="hide", readonly=False,
                 debug=False):
        super().__init__()
        self.conn = conn
        self.cache = cache
        self.timeout = timeout
        self.hide = unlink == "hide"
        self.readonly = readonly
        self.debug = debug
        self.nodes = {}                         # ino -> Node
        self.by_qid = {}                        # qid.path -> Node
        self.idle = collections.OrderedDict()   # ino -> Node with a fid and no open handle
        self.handles = {}                       # fh -> Handle
        self.next_ino = pyfuse3.ROOT_INODE + 1
        self.next_fh = 1
        self.hidden_serial = 0
        self.background = set()
        self.statfs_cache = (0.0, None)
        self.uids = {}
        self.gids = {}
        self.uname = conn.uname or dial.getuser()
        self.on_first_request = None    # called once the kernel has our answer to FUSE_INIT

    async def start(self):
        """Dial and attach; the root inode is the attach's root."""
        c = await self.conn.connect()
        st = await c.stat(c.root)
        root = Node(pyfuse3.ROOT_INODE, st, None, "")
        root.nlookup = 1
        self.nodes[root.ino] = root
        self.by_qid[root.qpath] = root
        self._adopt_root(c)
        return c

    def _adopt_root(self, c):
        root = self.nodes[pyfuse3.ROOT_INODE]
        root.fid, root.gen = c.root, self.conn.gen

    # --- inodes and their fids -----------------------------------------------------------------

    def node(self, ino):
        n = self.nodes.get(ino)
        if n is None:
            raise pyfuse3.FUSEError(errno.ESTALE)
        return n

    def _new_node(self, st, parent, name):
        n = Node(self.next_ino, st, parent, name)
        self.next_ino += 1
        return n

    def _register(self, n):
        self.nodes[n.ino] = n
        self.by_qid[n.qpath] = n

    def _forget(self, n):
        if n.ino == pyfuse3.ROOT_INODE:
            return
        self.nodes.pop(n.ino, None)
        if self.by_qid.get(n.qpath) is n:
            del self.by_qid[n.qpath]
        self.idle.pop(n.ino, None)
        self._drop_fid(n)

    def _drop_fid(self, n):
        if n.fid is not None and n.gen == self.conn.gen and self.conn.client is not None:
            self._spawn(self._clunk(self.conn.client, n.fid))
        n.fid = None

    def _spawn(self, coro):
        t = asyncio.get_running_loop().create_task(coro)
        self.background.add(t)
        t.add_done_callback(self.background.discard)

    async def _clunk(self, c, fid):
        try:
            await c.clunk(fid)
        except (Error9P, ConnectionError, RuntimeError):
            pass

    def _idle(self, n):
        """Note that n's fid was used; clunk the least recently used idle fids past
        IDLE_FIDS."""
        if n.ino == pyfuse3.ROOT_INODE or n.opens:
            return
        self.idle[n.ino] = n
        self.idle.move_to_end(n.ino)
        if len(self.idle) > IDLE_FIDS:
            for ino in list(self.idle)[:len(self.idle) - IDLE_FIDS]:
                old = self.idle[ino]
                if old.pins == 0 and old.opens == 0:
                    del self.idle[ino]
                    self._drop_fid(old)

    async def _fid(self, n):
        """(client, fid) walked to n, walking from the nearest ancestor that has a fid."""
        c = await self.conn.get()
        gen = self.conn.gen
        if n.fid is not None and n.gen == gen:
            self._idle(n)
            return c, n.fid
        if n.removed:
            raise pyfuse3.FUSEError(errno.ENOENT)
        root = self.nodes[pyfuse3.ROOT_INODE]
        if root.gen != gen:
            self._adopt_root(c)
        names = []
        at = n
        while at.fid is None or at.gen != gen:
            if at.parent is None:
                raise pyfuse3.FUSEError(errno.ESTALE)
            names.append(at.name)
            at = at.parent
        names.reverse()
        newfid = c.alloc_fid()
        try:
            qids = await c.walk(at.fid, newfid, names)
        except Error9P:
            c.free_fid(newfid)
            raise
        if len(qids) != len(names):
            c.free_fid(newfid)
            raise pyfuse3.FUSEError(errno.ENOENT)
        if qids[-1].path != n.qpath:        # another client put a different file there
            await self._clunk(c, newfid)
            raise pyfuse3.FUSEError(errno.ESTALE)
        if n.fid is not None and n.gen == gen:  # a request running beside us walked it first
            await self._clunk(c, newfid)
        else:
            n.fid, n.gen = newfid, gen
        self._idle(n)
        return c, n.fid

    async def _stat(self, n):
        c, fid = await self._pinned(n)
        try:
            st = await c.stat(fid)
        finally:
            n.pins -= 1
        n.st = st
        return st

    async def _pinned(self, n):
        """_fid, with the fid kept from the LRU until the caller does n.pins -= 1."""
        n.pins += 1
        try:
            return await self._fid(n)
        except BaseException:
            n.pins -= 1
            raise

    async def _walk_child(self, parent, name):
        """(client, fid, stat) of parent/name: a new fid the caller owns."""
        c, fid = await self._walk_only(parent, name)
        try:
            st = await c.stat(fid)
        except BaseException:
            await self._clunk(c, fid)
            raise
        return c, fid, st

    async def _walk_only(self, parent, name):
        """(client, fid) walked to parent/name: a new fid the caller owns."""
        c, pfid = await self._pinned(parent)
        try:
            fid = c.alloc_fid()
            try:
                qids = await c.walk(pfid, fid, [name])
            except Error9P:
                c.free_fid(fid)
                raise
            if len(qids) != 1:
                c.free_fid(fid)
                raise pyfuse3.FUSEError(errno.ENOENT)
        finally:
            parent.pins -= 1
        return c, fid

    def _child(self, parent, name, st, fid=None, gen=None):
        """The inode of parent/name (known by its qid, or new), given its stat and maybe a
        fid.  Not registered nor counted: see _lookup_done."""
        n = self.by_qid.get(st.qid.path)
        if n is None or n.removed:
            n = self._new_node(st, parent, name)
        elif not n.hidden:
            n.parent, n.name = parent, name
        n.st = st
        if fid is not None:
            if n.fid is None or n.gen != gen:
                n.fid, n.gen = fid, gen
            else:
                self._spawn(self._clunk(self.conn.client, fid))
        return n

    def _lookup_done(self, n):
        self._register(n)
        n.nlookup += 1
        if n.fid is not None:
            self._idle(n)

    # --- attributes ----------------------------------------------------------------------------

    def _uid(self, name):
        uid = self.uids.get(name)
        if uid is None:
            if name == self.uname:
                uid = os.getuid()
            else:
                try:
                    uid = pwd.getpwnam(name).pw_uid
                except KeyError:
                    uid = NOBODY
            self.uids[name] = uid
        return uid

    def _gid(self, name):
        gid = self.gids.get(name)
        if gid is None:
            try:
                gid = grp.getgrnam(name).gr_gid
            except KeyError:
                gid = os.getgid() if name == self.uname else NOBODY
            self.gids[name] = gid
        return gid

    def entry(self, n, st=None):
        st = st or n.st
        e = pyfuse3.EntryAttributes()
        e.st_ino = n.ino
        e.generation = 0
        e.entry_timeout = self.cache
        e.attr_timeout = self.cache
        kind = statmod.S_IFDIR if st.mode & DMDIR else statmod.S_IFREG
        e.st_mode = kind | (st.mode & 0o777)
        e.st_nlink = 0 if (n.hidden or n.removed) else 1
        e.st_uid = self._uid(st.uid)
        e.st_gid = self._gid(st.gid)
        e.st_rdev = 0
        e.st_size = 0 if st.mode & DMDIR else st.length
        e.st_blksize = 1 << 20
        e.st_blocks = (e.st_size + 511) // 512
        e.st_atime_ns = st.atime * 1_000_000_000
        e.st_mtime_ns = st.mtime * 1_000_000_000
        e.st_ctime_ns = e.st_mtime_ns
        return e

    # --- requests: names -----------------------------------------------------------------------

    @request
    async def lookup(self, parent_inode, name, ctx=None):
        parent = self.node(parent_inode)
        name = os.fsdecode(name)
        if name == ".":
            return self.entry(parent)
        if name == "..":
            up = parent.parent or parent
            return self.entry(up)
        if self.hide and name.startswith(HIDDEN):
            raise pyfuse3.FUSEError(errno.ENOENT)
        c, fid, st = await self._walk_child(parent, name)
        n = self._child(parent, name, st, fid, self.conn.gen)
        self._lookup_done(n)
        return self.entry(n)

    @request
    async def forget(self, inode_list):
        for ino, count in inode_list:
            n = self.nodes.get(ino)
            if n is None:
                continue
            n.nlookup -= count
            if n.nlookup <= 0 and n.opens == 0:
                self._forget(n)

    @request
    async def getattr(self, inode, ctx=None):
        n = self.node(inode)
        if n.removed:
            return self.entry(n)
        return self.entry(n, await self._stat(n))

    @request
    async def setattr(self, inode, attr, fields, fh, ctx):
        n = self.node(inode)
        st = nochange()
        change = False
        if fields.update_size:
            st.length = attr.st_size
            n.changes += 1
            change = True
        if fields.update_mode:
            have = n.st if n.st is not None else await self._stat(n)
            st.mode = (have.mode & ~0o777) | (attr.st_mode & 0o777)
            change = True
        if fields.update_mtime:
            st.mtime = attr.st_mtime_ns // 1_000_000_000
            change = True
        if fields.update_uid:
            have = await self._stat(n)
            if attr.st_uid != self._uid(have.uid):
                raise pyfuse3.FUSEError(errno.EPERM)    # 9P2000 never changes an owner
        if fields.update_gid:
            try:
                st.gid = grp.getgrgid(attr.st_gid).gr_name
            except KeyError:
                raise pyfuse3.FUSEError(errno.EINVAL) from None
            change = True
        # atime alone: 9P2000's wstat cannot set it (stat(5)); nothing to send
        if change:
            h = self.handles.get(fh) if fh else None
            if h is not None and h.gen == self.conn.gen:
                await self.conn.client.wstat(h.fid, st)
            else:
                c, fid = await self._pinned(n)
                try:
                    await c.wstat(fid, st)
                finally:
                    n.pins -= 1
        return self.entry(n, await self._stat(n))

    @request
    async def mkdir(self, parent_inode, name, mode, ctx):
        parent = self.node(parent_inode)
        name = os.fsdecode(name)
        await self._create(parent, name, DMDIR | (mode & 0o777), OREAD, keep_open=False)
        c, fid, st = await self._walk_child(parent, name)
        st = await self._exact_mode(c, fid, st, mode)
        n = self._child(parent, name, st, fid, self.conn.gen)
        self._lookup_done(n)
        return self.entry(n)

    async def _create(self, parent, name, perm, omode, keep_open):
        """Tcreate parent/name on a clone of parent's fid; return (client, open fid) if
        keep_open, else clunk it."""
        if self.hide and name.startswith(HIDDEN):
            raise pyfuse3.FUSEError(errno.EINVAL)
        c, pfid = await self._pinned(parent)
        try:
            fid = await c.walkpath("", pfid)
        finally:
            parent.pins -= 1
        try:
            await c.create(fid, name, perm, omode)
        except BaseException:
            await self._clunk(c, fid)
            raise
        if keep_open:
            return c, fid
        await self._clunk(c, fid)
        return c, None

    async def _exact_mode(self, c, fid, st, mode):
        """Create masks the permission bits with the parent's (Plan 9's rule); POSIX asks for
        mode & ~umask as given.  Set them if they differ; return the stat."""
        if st.mode & 0o777 != mode & 0o777:
            want = nochange()
            want.mode = (st.mode & ~0o777) | (mode & 0o777)
            try:
                await c.wstat(fid, want)
                st = await c.stat(fid)
            except Error9P:
                pass    # not ours to change: keep what the server gave
        return st

    @request
    async def create(self, parent_inode, name, mode, flags, ctx):
        parent = self.node(parent_inode)
        name = os.fsdecode(name)
        omode = _omode(flags)
        c, ofid = await self._create(parent, name, mode & 0o777, omode, keep_open=True)
        # the inode's own fid and the new file's stat, in one round trip
        walked, st = await asyncio.gather(self._walk_only(parent, name), c.stat(ofid),
                                          return_exceptions=True)
        try:
            for r in (walked, st):
                if isinstance(r, BaseException):
                    raise r
            c, fid = walked
            st = await self._exact_mode(c, fid, st, mode)
        except BaseException:
            await self._clunk(c, ofid)
            if not isinstance(walked, BaseException):
                await self._clunk(c, walked[1])
            raise
        n = self._child(parent, name, st, fid, self.conn.gen)
        self._lookup_done(n)
        h = self._handle(n, ofid, omode & ~OTRUNC)
        n.vers = st.qid.vers
        return pyfuse3.FileInfo(fh=h.fh), self.entry(n)

    def _handle(self, n, fid, mode):
        h = Handle(self.next_fh, n, fid, self.conn.gen, mode)
        self.next_fh += 1
        self.handles[h.fh] = h
        n.opens += 1
        self.idle.pop(n.ino, None)
        return h

    async def _hide(self, c, fid, n):
        """Rename the open file n (walked to by fid) to a hidden name until its last close."""
        self.hidden_serial += 1
        hidden = f"{HIDDEN}{n.qpath:x}-{self.hidden_serial}"
        st = nochange()
        st.name = hidden
        await c.wstat(fid, st)
        n.name = hidden
        n.hidden = True

    async def _unlink(self, parent, name, want_dir):
        c, fid, st = await self._walk_child(parent, name)
        isdir = bool(st.mode & DMDIR)
        if want_dir != isdir:
            await self._clunk(c, fid)
            raise pyfuse3.FUSEError(errno.ENOTDIR if want_dir else errno.EISDIR)
        n = self.by_qid.get(st.qid.path)
        if n is not None and n.opens and self.hide and not isdir:
            try:
                await self._hide(c, fid, n)
            finally:
                await self._clunk(c, fid)
            return
        await c.remove(fid)
        if n is not None:
            n.removed = True
            if self.by_qid.get(n.qpath) is n:
                del self.by_qid[n.qpath]

    @request
    async def unlink(self, parent_inode, name, ctx):
        await self._unlink(self.node(parent_inode), os.fsdecode(name), False)

    @request
    async def rmdir(self, parent_inode, name, ctx):
        await self._unlink(self.node(parent_inode), os.fsdecode(name), True)

    @request
    async def rename(self, parent_inode_old, name_old, parent_inode_new, name_new, flags, ctx):
        if flags & ~_RENAME_NOREPLACE:
            raise pyfuse3.FUSEError(errno.EINVAL)        # RENAME_EXCHANGE, RENAME_WHITEOUT
        if parent_inode_old != parent_inode_new:
            raise pyfuse3.FUSEError(errno.EXDEV)         # 9P2000 renames within a directory
        parent = self.node(parent_inode_old)
        old, new = os.fsdecode(name_old), os.fsdecode(name_new)
        if self.hide and new.startswith(HIDDEN):
            raise pyfuse3.FUSEError(errno.EINVAL)
        if old == new:
            return
        c, fid, st = await self._walk_child(parent, old)
        try:
            await self._clear_target(parent, new, st, flags)
            want = nochange()
            want.name = new
            try:
                await c.wstat(fid, want)
            except Error9P as e:
                if e.ename != E.EEXIST:
                    raise
                # a server that will not rename onto an existing file: remove it first
                await self._clear_target(parent, new, st, flags, remove_files=True)
                await c.wstat(fid, want)
        finally:
            await self._clunk(c, fid)
        n = self.by_qid.get(st.qid.path)
        if n is not None:
            n.parent, n.name = parent, new

    async def _clear_target(self, parent, name, src, flags, remove_files=False):
        """Make way for a rename of src onto parent/name, as rename(2) would."""
        try:
            c, fid, st = await self._walk_child(parent, name)
        except pyfuse3.FUSEError as e:
            if e.errno == errno.ENOENT:
                return
            raise
        except Error9P as e:
            if errno_of(e.ename) == errno.ENOENT:
                return
            raise
        try:
            if flags & _RENAME_NOREPLACE:
                raise pyfuse3.FUSEError(errno.EEXIST)
            if st.qid.path == src.qid.path:
                return
            sdir, tdir = bool(src.mode & DMDIR), bool(st.mode & DMDIR)
            if tdir and not sdir:
                raise pyfuse3.FUSEError(errno.EISDIR)
            if sdir and not tdir:
                raise pyfuse3.FUSEError(errno.ENOTDIR)
            n = self.by_qid.get(st.qid.path)
            if not tdir and n is not None and n.opens and self.hide:
                await self._hide(c, fid, n)
            elif tdir or remove_files:
                await c.remove(fid)
                fid = None
                if n is not None:
                    n.removed = True
                    if self.by_qid.get(n.qpath) is n:
                        del self.by_qid[n.qpath]
        finally:
            if fid is not None:
                await self._clunk(c, fid)

    @request
    async def symlink(self, parent_inode, name, target, ctx):
        raise pyfuse3.FUSEError(errno.EPERM)    # 9P2000 has no symbolic links

    @request
    async def link(self, inode, new_parent_inode, new_name, ctx):
        raise pyfuse3.FUSEError(errno.EPERM)    # nor hard links

    @request
    async def mknod(self, parent_inode, name, mode, rdev, ctx):
        raise pyfuse3.FUSEError(errno.EPERM)    # nor devices, pipes or sockets

    # --- requests: open files ------------------------------------------------------------------

    async def _open_fid(self, n, mode):
        """(client, fid) cloned from n's fid and opened with mode."""
        c, nfid = await self._pinned(n)
        try:
            fid = await c.walkpath("", nfid)
        finally:
            n.pins -= 1
        try:
            qid, _ = await c.open(fid, mode)
        except BaseException:
            await self._clunk(c, fid)
            raise
        return c, fid, qid

    @request
    async def open(self, inode, flags, ctx):
        n = self.node(inode)
        omode = _omode(flags)
        c, fid, qid = await self._open_fid(n, omode)
        keep = n.vers == qid.vers and not omode & OTRUNC
        n.vers = qid.vers
        h = self._handle(n, fid, omode & ~OTRUNC)
        return pyfuse3.FileInfo(fh=h.fh, keep_cache=keep)

    async def _live(self, h):
        """(client, fid) of an open handle, opened again if the connection was redialled."""
        c = await self.conn.get()
        if h.gen != self.conn.gen:
            self._drop_ahead(h)
            c, fid, _ = await self._open_fid(h.node, h.mode)
            h.fid, h.gen = fid, self.conn.gen
        return c, h.fid

    @request
    async def read(self, fh, off, size):
        h = self.handles[fh]
        c, fid = await self._live(h)
        unit = c.iounit(fid)
        if h.mode != OREAD:
            return await _read(c, fid, unit, off, size)
        return await self._read_ahead(h, c, fid, unit, off, size)

    async def _read_ahead(self, h, c, fid, unit, off, size):
        """A read on a read-only handle: served from READ_AHEAD reads of an iounit each,
        started when the reads before were sequential, so that a reader that goes on keeps
        several Treads in flight (the kernel asks for one request's worth at a time)."""
        if h.ahead and h.ahead[0][2] != h.node.changes:     # written since: start afresh
            self._drop_ahead(h)
        end = off + size
        parts = []
        pos = off
        while pos < end and h.ahead:
            start, task, _ = h.ahead[0]
            if pos < start or pos >= start + unit:
                if start + unit <= pos:         # passed: let it go
                    h.ahead.pop(0)
                    continue
                break
            data = await asyncio.shield(task)   # others may wait for it: never cancel it
            piece = data[pos - start:end - start]
            parts.append(piece)
            pos += len(piece)
            if start + len(data) <= pos and h.ahead and h.ahead[0][1] is task:
                h.ahead.pop(0)
            if len(data) < unit:                # the end of the file
                end = pos
                break
        if pos < end:
            parts.append(await _read(c, fid, unit, pos, end - pos))
        if off == h.next:
            nxt = h.ahead[-1][0] + unit if h.ahead else off + size
            while len(h.ahead) < READ_AHEAD:
                task = asyncio.ensure_future(c.read(fid, nxt, unit))
                task.add_done_callback(_retrieve)   # a read nobody awaits fails quietly
                h.ahead.append([nxt, task, h.node.changes])
                nxt += unit
        h.next = off + size
        return b"".join(parts)

    def _drop_ahead(self, h):
        """Forget the read-ahead: its reads finish unheeded (never cancelled: a request may
        be awaiting one)."""
        h.ahead = []

    @request
    async def write(self, fh, off, buf):
        h = self.handles[fh]
        c, fid = await self._live(h)
        h.node.changes += 1
        n = await c.write(fid, off, buf)
        if n == 0 and len(buf):
            raise pyfuse3.FUSEError(errno.EIO)
        return n

    @request
    async def flush(self, fh):
        pass        # writes are answered once the server has them: nothing is held here

    @request
    async def release(self, fh):
        await self._release(fh)

    async def _release(self, fh):
        h = self.handles.pop(fh, None)
        if h is None:
            return
        self._drop_ahead(h)
        n = h.node
        n.opens -= 1
        if h.gen == self.conn.gen and self.conn.client is not None:
            await self._clunk(self.conn.client, h.fid)
        if n.opens == 0:
            if n.hidden and not n.removed:
                try:
                    c, fid = await self._fid(n)
                    n.fid = None
                    await c.remove(fid)
                except (Error9P, ConnectionError, pyfuse3.FUSEError) as e:
                    log(f"could not remove the unlinked file {n.name}: {e}")
                n.removed = True
                if self.by_qid.get(n.qpath) is n:
                    del self.by_qid[n.qpath]
            if n.nlookup <= 0:
                self._forget(n)
            elif n.fid is not None:
                self._idle(n)

    @request
    async def fsync(self, fh, datasync):
        await self._fsync(fh)

    async def _fsync(self, fh):
        h = self.handles[fh]
        c, fid = await self._live(h)
        await c.wstat(fid, nochange())     # 9P2000's fsync: a wstat that changes nothing

    # --- requests: directories -----------------------------------------------------------------

    @request
    async def opendir(self, inode, ctx):
        n = self.node(inode)
        c, fid, _ = await self._open_fid(n, OREAD)
        return self._handle(n, fid, OREAD).fh

    @request
    async def readdir(self, fh, start_id, token):
        h = self.handles[fh]
        if start_id == 0 or h.entries is None:
            h.entries = await self._read_dir(h)
        parent = h.node
        for i in range(start_id, len(h.entries)):
            st = h.entries[i]
            if self.hide and st.name.startswith(HIDDEN):
                continue
            n = self._child(parent, st.name, st)
            if not pyfuse3.readdir_reply(token, os.fsencode(st.name), self.entry(n, st), i + 1):
                break
            self._lookup_done(n)

    async def _read_dir(self, h):
        """Every entry of an open directory, read from offset 0 to the end (offset 0
        restarts a directory read, so rewinddir reads it afresh)."""
        c, fid = await self._live(h)
        data = bytearray()
        while True:
            got = await c.read(fid, len(data), c.iounit(fid))
            if not got:
                return _unpack_dir(bytes(data))
            data += got

    @request
    async def releasedir(self, fh):
        await self._release(fh)

    @request
    async def fsyncdir(self, fh, datasync):
        await self._fsync(fh)

    # --- the file system -----------------------------------------------------------------------

    @request
    async def statfs(self, ctx):
        at, cached = self.statfs_cache
        if cached is not None and time.monotonic() - at < 1.0:
            return cached
        s = pyfuse3.StatvfsData()
        s.f_bsize = s.f_frsize = 16384
        s.f_blocks = s.f_bfree = s.f_bavail = s.f_files = s.f_ffree = s.f_favail = 0
        s.f_namemax = 255
        try:
            bsize, total, free = await self._disk_blocks()
        except (Error9P, ValueError, IndexError):
            pass    # not a creepy server, or no /stats for us: zeros
        else:
            s.f_bsize = s.f_frsize = bsize
            s.f_blocks, s.f_bfree, s.f_bavail = total, free, free
            s.f_files, s.f_ffree, s.f_favail = total, free, free
        self.statfs_cache = (time.monotonic(), s)
        return s

    async def _disk_blocks(self):
        """(block size, blocks, free blocks) from /stats of the `main` attach."""
        c = await self.conn.get()
        fid = c.alloc_fid()
        try:
            await c.attach(fid, self.uname, "main")
        except Error9P:
            c.free_fid(fid)
            raise
        try:
            sfid = await c.walkpath("stats", fid)
            try:
                await c.open(sfid, OREAD)
                text = (await c.read(sfid, 0, c.iounit(sfid))).decode("utf-8", "replace")
            finally:
                await self._clunk(c, sfid)
        finally:
            await self._clunk(c, fid)
        lines = dict(ln.split("\t", 1) for ln in text.splitlines() if "\t" in ln)
        disk = lines["disk:"].split()           # main 16384 byte blocks, 4096 total
        blocks = lines["blocks:"].split()       # 3 used 4089 free
        return int(disk[1]), int(disk[-2]), int(blocks[2])

    @request
    async def access(self, inode, mode, ctx):
        """Plan 9's permission check on the bits we know, as the server makes it: other, then
        group (by name), then owner.  The server decides for real when the file is used."""
        n = self.node(inode)
        st = n.st if n.st is not None else await self._stat(n)
        if mode == os.F_OK:
            return True
        perm = st.mode & 0o7
        if st.gid == self.uname:
            perm |= (st.mode >> 3) & 0o7
        if st.uid == self.uname:
            perm |= (st.mode >> 6) & 0o7
        return (perm & mode) == mode


_RENAME_NOREPLACE = 1


def _omode(flags):
    acc = flags & os.O_ACCMODE
    mode = OWRITE if acc == os.O_WRONLY else ORDWR if acc == os.O_RDWR else OREAD
    if flags & os.O_TRUNC and acc != os.O_RDONLY:
        mode |= OTRUNC
    return mode


def _retrieve(task):
    if not task.cancelled():
        task.exception()


async def _read(c, fid, unit, off, size):
    """size bytes at off (fewer only at the end of the file), in Treads of at most unit at
    once, as read(2) gives them: a short read before the end is read on."""
    if size <= unit:
        data = await c.read(fid, off, size)
        if len(data) == size or not data:
            return data
        parts = [data]
    else:
        spans = [(off + i, min(unit, size - i)) for i in range(0, size, unit)]
        parts = await asyncio.gather(*(c.read(fid, o, n) for o, n in spans))
        if all(len(p) == n for p, (_, n) in zip(parts, spans)):
            return b"".join(parts)
        for i, (p, (_, n)) in enumerate(zip(parts, spans)):
            if len(p) < n:              # what follows a short read is misplaced
                del parts[i + 1:]
                break
    got = sum(map(len, parts))
    while got < size:
        more = await c.read(fid, off + got, size - got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)


def _unpack_dir(data):
    entries = []
    off = 0
    while off < len(data):
        st, off = unpack_stat(data, off)
        entries.append(st)
    return entries


# --- the command ------------------------------------------------------------------------------

#: -o options: name -> (kind, default); kind bool takes no value
OPTIONS = {
    "ro": (bool, False), "rw": (bool, False), "allow_other": (bool, False),
    "debug": (bool, False), "cache": (float, 1.0), "timeout": (float, 30.0),
    "unlink": (("hide", "remove"), "hide"), "msize": (int, DEFAULT_MSIZE),
}


def parse_options(specs):
    """-o values ('ro,cache=0.5', ...) -> {name: value}; Fail on an unknown or bad one."""
    opts = {k: d for k, (_, d) in OPTIONS.items()}
    for spec in specs:
        for item in spec.split(","):
            if not item:
                continue
            name, eq, value = item.partition("=")
            if name not in OPTIONS:
                raise Fail(f"unknown option {name!r} (options: {', '.join(OPTIONS)})")
            kind = OPTIONS[name][0]
            if kind is bool:
                if eq:
                    raise Fail(f"option {name} takes no value")
                opts[name] = True
            elif isinstance(kind, tuple):
                if value not in kind:
                    raise Fail(f"option {name}: use one of {', '.join(kind)}")
                opts[name] = value
            else:
                try:
                    opts[name] = kind(value)
                except ValueError:
                    raise Fail(f"option {name}: bad value {value!r}") from None
                if opts[name] < 0 or (opts[name] == 0 and name != "cache"):
                    raise Fail(f"option {name}: must be positive")
    if opts["ro"] and opts["rw"]:
        raise Fail("options ro and rw contradict each other")
    return opts


async def serve(a, opts, mnt, ready):
    """Attach, mount, answer the kernel until unmounted or signalled."""
    link = Link(a.addr, a.u, a.A or "", opts["msize"])
    fs = Fs(link, cache=opts["cache"], timeout=opts["timeout"], unlink=opts["unlink"],
            readonly=opts["ro"], debug=opts["debug"])
    try:
        await fs.start()
    except (OSError, ConnectionError, Error9P, asyncio.TimeoutError) as e:
        raise Fail(f"cannot attach {a.A or ''!r} on {a.addr}: {e or type(e).__name__}") from None
    fuse_opts = {f"fsname={a.addr}", "subtype=creepy"}
    for name in ("ro", "allow_other", "debug"):
        if opts[name]:
            fuse_opts.add(name)
    try:
        pyfuse3.init(fs, mnt, fuse_opts)
    except RuntimeError as e:
        await link.client.close()
        raise Fail(f"cannot mount on {mnt}: {e}") from None
    signalled = []
    loop = asyncio.get_running_loop()

    def stop(sig):
        signalled.append(sig)
        pyfuse3.terminate()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(sig, stop, sig)
    # the kernel sets the read-ahead from its FUSE_INIT exchange, which comes before any other
    # request: turning it up works from the first request on, not before
    fs.on_first_request = lambda: set_readahead(mnt, link.client.msize)
    log(f"{a.addr} mounted on {mnt}")
    if ready is not None:
        ready()
    try:
        await pyfuse3.main()
    finally:
        pyfuse3.close(unmount=bool(signalled))
        if link.client is not None:
            await link.client.close()
    if signalled:
        log(f"{signal.Signals(signalled[0]).name}: unmounted {mnt}")
    return 0


def set_readahead(mnt, msize):
    """Let the kernel read ahead one 9P message's worth (1 MiB), not its default 128 KiB, so
    that a sequential read is a few large Treads, not many small ones.  The knob is the
    mount's backing device's read_ahead_kb in sysfs; only root may turn it, so for others
    this does nothing.  The mount's device number comes from /proc/self/mountinfo: a stat of
    the mount point would wait for the FUSE loop that is not running yet."""
    if os.geteuid() != 0:
        return
    dev = None
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                fields = line.split()
                where = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4])
                if where == mnt:
                    dev = fields[2]         # the last mount there is ours
        if dev is not None:
            with open(f"/sys/class/bdi/{dev}/read_ahead_kb", "w") as f:
                f.write(str(max(128, (msize - 24) // 1024)))
    except (OSError, IndexError):
        pass    # an older kernel or a container without sysfs: the default read-ahead


def run(a, opts, mnt, ready=None):
    pyfuse3.asyncio.enable()
    return asyncio.run(serve(a, opts, mnt, ready))


def daemon(a, opts, mnt):
    """Mount in a child that lives on; return once it says the mount is ready (0) or why it
    is not (1)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        os.setsid()

        def ready():
            global _syslog
            os.write(w, b"ok\n")
            os.close(w)
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):        # let go of the terminal and of any pipe we were given
                os.dup2(null, fd)
            os.close(null)
            syslog.openlog("creepy-mount", syslog.LOG_PID, syslog.LOG_DAEMON)
            _syslog = True
        status = 1
        try:
            status = run(a, opts, mnt, ready)
        except Fail as e:
            os.write(w, str(e).encode())
        except BaseException as e:
            os.write(w, f"internal error: {e!r}".encode())
        finally:
            os._exit(status)
    os.close(w)
    chunks = []
    while True:
        data = os.read(r, 4096)
        if not data:
            break
        chunks.append(data)
    os.close(r)
    said = b"".join(chunks).decode("utf-8", "replace")
    if said.startswith("ok\n"):
        return 0
    os.waitpid(pid, 0)
    log(said or "the mount ended before it was ready")
    return 1


def main(argv=None):
    ap = argparse.ArgumentParser(
        prog="creepy mount",
        description="Mount a 9P2000 tree on a local directory through FUSE.  Unmount with "
                    "fusermount -u MOUNTPOINT (or SIGTERM to the mount).")
    ap.add_argument("-f", action="store_true", help="stay in the foreground")
    ap.add_argument("-o", action="append", default=[], metavar="opt[,opt...]",
                    help="ro, allow_other, cache=SECS (1), timeout=SECS (30), "
                         "unlink=hide|remove (hide), msize=BYTES, debug")
    ap.add_argument("-A", metavar="aname", help="attach this tree (default: the empty aname)")
    ap.add_argument("-u", metavar="user", help="attach as this user (default: who runs us)")
    ap.add_argument("addr", help="tcp!host!port, host:port, unix!/path, or a posted name")
    ap.add_argument("mountpoint")
    a = ap.parse_args(argv)
    try:
        opts = parse_options(a.o)
        dial.parse(a.addr)
    except (Fail, ValueError) as e:
        print(f"creepy mount: {e}", file=sys.stderr)
        return 2
    mnt = os.path.abspath(a.mountpoint)
    if pyfuse3 is None:
        log("needs pyfuse3: apt-get install fuse3 libfuse3-dev pkg-config, then "
            "pip install 'creepy[mount]'")
        return 1
    if not os.path.exists("/dev/fuse"):
        log("/dev/fuse is missing: this machine (or container) offers no FUSE")
        return 1
    if not os.path.isdir(mnt):
        log(f"{a.mountpoint}: not a directory")
        return 1
    if os.path.ismount(mnt):
        log(f"{a.mountpoint}: something is mounted there already")
        return 1
    if not a.f:
        return daemon(a, opts, mnt)
    try:
        return run(a, opts, mnt)
    except Fail as e:
        log(str(e))
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as e:      # a bug of ours: one line, not a traceback
        log(f"internal error: {e!r}")
        return 1
