"""The served file tree: Plan 9 file-system semantics over the store.

This layer owns what a file means to a user: walking, opening, permissions, the users file, the
synthesized `/`, `/cons` and `/stats`, attach specifiers, read-only and full-disk modes, and the
sync policy.  It knows no sockets and no 9P encoding: the service layer calls the methods below
(the contract in creepy/ninep/server.py) with decoded values and turns FsError into Rerror.

Layout (creepy(4)): attaching "main" gives

    /            synthesized, never on disk
    /root        the tree kept by the store
    /cons        the console (console.py)
    /stats       statistics, a snapshot taken when opened

and "", "root" or "main/active" give /root itself.  On a WORM disk (rip) every attach is
read-only except "wormwr", which gives /root read-write to the owner and allowed users.
"""

import asyncio
import os
from inspect import isawaitable
import pwd
import time

from creepy import errors as E
from creepy.errors import DiskFull, FsError, StoreStopped
from creepy.fs.console import Console
from creepy.fs.locks import END, UNLCK, Locks
from creepy.fs.users import MAXFILE, Users, UsersError
from creepy.store.format import DMAPPEND, DMDIR, DMEXCL, DMSYMLINK, MODE_BITS
from creepy.store.node import qpath_in, qpath_of_entry

# 9P constants the tree needs (the service layer defines the same values for the wire).
OREAD, OWRITE, ORDWR, OEXEC = 0, 1, 2, 3
OTRUNC, ORCLOSE = 0x10, 0x40
QTDIR, QTAPPEND, QTEXCL, QTTMP, QTSYMLINK, QTFILE = 0x80, 0x40, 0x20, 0x04, 0x02, 0
AREAD, AWRITE, AEXEC = 4, 2, 1
NOCHANGE32 = 0xFFFFFFFF
NOCHANGE64 = 0xFFFFFFFFFFFFFFFF
MAXNAME = 255
USERS_FILE = "users"

# A read of this many bytes or more comes back as a list of pieces (the store's blocks, or
# views of them), which the service layer writes as they are, never joined.
PIECES = 1 << 16

SYNTH = 1 << 63
TOP, CONS, STATS = "top", "cons", "stats"
SYNTH_PATH = {TOP: SYNTH | 1, CONS: SYNTH | 2, STATS: SYNTH | 3}


def unix_user(uid=None):
    try:
        return pwd.getpwuid(os.getuid() if uid is None else uid).pw_name
    except KeyError:
        return str(os.getuid() if uid is None else uid)


class Dir:
    """A stat record with 9P's field names (the service layer packs it)."""
    __slots__ = ("type", "dev", "qid", "mode", "atime", "mtime", "length", "name", "uid", "gid",
                 "muid", "packed")

    def __init__(self, qid, mode, atime, mtime, length, name, uid, gid, muid):
        self.type = 0
        self.dev = 0
        self.qid = qid
        self.mode = mode
        self.atime = atime
        self.mtime = mtime
        self.length = length
        self.name = name
        self.uid = uid
        self.gid = gid
        self.muid = muid
        self.packed = None          # the wire encoding, kept by the service layer

    def __repr__(self):
        return f"Dir({self.name!r} {self.mode:o} {self.uid}/{self.gid} {self.length})"


class Attr:
    """A file's attributes for 9P2000.L's getattr: 9P mode bits, user and group names,
    length, times in ns (the service layer turns them into POSIX's)."""
    __slots__ = ("qid", "mode", "uid", "gid", "length", "atime", "mtime")

    def __init__(self, qid, mode, uid, gid, length, atime, mtime):
        self.qid = qid
        self.mode = mode
        self.uid = uid
        self.gid = gid
        self.length = length
        self.atime = atime
        self.mtime = mtime


def _then(r, fn):
    """fn() after r, which may be an awaitable (the tree waiting for room on its disk)."""
    if r is not None and hasattr(r, "__await__"):
        async def later():
            await r
            return fn()
        return later()
    return fn()


def qid_of_mode(mode, vers, path):
    return ((mode >> 24) & (QTDIR | QTAPPEND | QTEXCL | QTTMP | QTSYMLINK), vers, path)


def dir_of_entry(d, e):
    """The Dir of entry e of directory d (its qid.path as the qid space of d gives it)."""
    mode = e[2]
    return Dir(qid_of_mode(mode, e[9], qpath_of_entry(d, e)), mode, e[6] // 1_000_000_000,
               e[7] // 1_000_000_000, 0 if mode & DMDIR else e[8], e[0], e[3], e[4], e[5])


class File:
    """What a fid holds: a file (a store node or a synthesized file), the user, the open mode.

    Fids come and go with nearly every walk, so a File sets only what it is made with; the
    state of an open file starts from the class's defaults below."""
    __slots__ = ("kind", "node", "user", "top", "readonly", "peer", "__dict__")

    omode = -1
    isopen = False
    snapshot = None             # /stats text at open
    cons = None                 # console reader state
    wrote_users = False
    nextread = 0                # where a sequential read would go next (read-ahead)
    writer = False              # this fid's open counts in Fs.writers

    def __init__(self, kind, node, user, top, readonly, peer=None):
        self.kind = kind
        self.node = node
        self.user = user
        self.top = top              # attached with "main": walking up from /root reaches /
        self.readonly = readonly
        self.peer = peer
        if node is not None:
            node.refs += 1

    @property
    def isdir(self):
        return self.kind == TOP or (self.node is not None and self.node.isdir)

    @property
    def qid(self):
        if self.node is not None:
            n = self.node
            return qid_of_mode(n.mode, n.vers, n.qpath)
        return ((QTDIR if self.kind == TOP else 0), 0, SYNTH_PATH[self.kind])

    def release(self):
        if self.node is not None:
            self.node.refs -= 1
            self.node = None


class Fs:
    """The file tree served by 9pix and rip."""

    def __init__(self, store, *, owner=None, readonly=False, noauth=False, worm=None,
                 sync_interval=5.0, dirty_limit=64 << 20, log=None):
        self.store = store
        self.owner = owner or unix_user()      # the Unix user running the server
        self.readonly = readonly or store.readonly
        self.worm = store.kind == "worm" if worm is None else worm
        self.noauth = noauth
        self.full = False
        self.halted = False
        self.sync_interval = sync_interval
        self.dirty_limit = dirty_limit
        store.keep_limit = dirty_limit          # frames kept: at most the dirty limit
        self.log = log or (lambda msg: None)
        self.started = time.time()
        self.peers = []                         # live connections, for `who`
        self.stats_sources = []                 # callables giving extra /stats lines
        self.on_halt = None                     # the program's way to stop
        self.syncs_wanted = asyncio.Event() if _has_loop() else None
        self._syncer = None
        self.users_text = b""                  # the users file of the table in force
        # node -> {connection: its opens that create or write the file}.  Write permission is
        # checked when a connection first opens a file for writing (or creates it); while
        # that lasts, the connection may open it for writing again, whatever its mode now
        # says: Linux opens its writeback fid (as root) after the user's own open, and git
        # writes the 0444 files it creates (POSIX: open(O_CREAT) grants the access asked).
        # A connection carries one Unix user's authority (or any, with -a or as root), so
        # this lets it do nothing it could not do already.
        self.writers = {}
        self.locks = Locks()                    # 9P2000.L's advisory locks
        self._numbers = (None, {})              # (users table, {name: number}) memo
        self.users = self._load_users()
        self.console = Console(self)
        store.say = self._store_says

    def _store_says(self, msg):
        self.log(msg)
        self.console.say(msg)

    # --- users -----------------------------------------------------------------------------
    #
    # /root/users is read at start-up and judged again whenever a fid that could have changed
    # it is clunked (or a wstat changes its length).  A file Users.load refuses never becomes
    # the table: at start-up the built-in table is used, later the write gets the error and
    # the file gets back the text of the table in force, so a restart finds that table too.

    def _load_users(self):
        try:
            n = self.store.lookup(self.store.root, USERS_FILE)
        except FsError as e:                # a damaged root directory: say so, serve the rest
            self.log(f"/root/users unreadable: {e.ename}; using the built-in users")
            n = None
        if n is not None and not n.isdir:
            try:
                data = self._users_bytes(n)
                users = Users.load(data, self.owner)
            except (UsersError, FsError) as e:
                self.log(f"/root/users refused: {getattr(e, 'ename', e)}; "
                         f"using the built-in users")
            else:
                self.users_text = data
                return users
        users = Users.defaults(self.owner)
        self.users_text = users.format().encode()
        return users

    def _users_bytes(self, n, length=None):
        """The users file's bytes (cut or zero-filled to length), at most MAXFILE + 1."""
        length = n.length if length is None else length
        data = self.store.read(n, 0, min(n.length, length, MAXFILE + 1))
        return data + bytes(min(length, MAXFILE + 1) - len(data))

    def _judge_users(self, data):
        """The table data would give; FsError("users file refused: ...") if it is refused."""
        try:
            return Users.load(data, self.owner)
        except UsersError as e:
            raise FsError(f"{E.EUSERSBAD}: {e}") from None

    def _install_users(self, new, data):
        self.users.replace(new)
        self.users_text = data
        self.console.say(f"users file loaded: {len(new.names())} users")

    def _reload_users(self, f, n):
        data = self._users_bytes(n)
        try:
            new = self._judge_users(data)
        except FsError as e:
            self.console.say(f"{e.ename}; the table in force stays")
            if data != self.users_text:
                self.store.truncate(n, 0)
                self.store.write(n, 0, self.users_text)
                self._modified(f, n)
            raise
        self._install_users(new, data)

    def _is_users(self, n):
        return n.parent is self.store.root and n.name == USERS_FILE

    def allowed(self, user):
        """Users who bypass permissions: those the console allowed and, on a WORM, its owner
        (who must be able to archive any tree with its owners intact)."""
        return user in self.users.allowed or (self.worm and user == self.owner)

    def _owner_reaches(self, f, n, want):
        """The server's owner always reaches the users file: it may walk /root and read and
        write /root/users whatever their modes (and the console: _need_synth)."""
        return f.user == self.owner and (self._is_users(n) or
                                         (n is self.store.root and want == AEXEC))

    def resolve_user(self, uname):
        if self.users.enabled(uname):
            return uname
        if uname == self.owner:
            return uname
        return "none"

    # --- the service contract --------------------------------------------------------------

    def connect(self, peer):
        self.peers.append(peer)

    def disconnect(self, peer):
        if peer in self.peers:
            self.peers.remove(peer)
        if self.locks.byfile:
            self.locks.release(lambda lk: lk.owner[0] == id(peer))

    def auth(self, peer, uname, aname):
        raise FsError(E.ENOAUTH if self.noauth else
                      "authentication by Tauth is not supported: use the Unix socket")

    def attach(self, peer, uname, aname, afile=None, n_uname=None):
        """n_uname: 9P2000.L's numeric user; when given it names the user (unknown numbers
        are `none`) and uname is ignored."""
        if afile is not None:           # Tauth never succeeds, so no fid is an auth file
            raise FsError(E.ENOTAUTHFID)
        if self.halted:
            raise FsError(E.EHALTED)
        if not self.noauth:
            cred = getattr(peer, "cred", None)
            if cred is None:
                raise FsError(E.EAUTHTCP)
            peeruid = cred[1]
            if peeruid not in (0, os.getuid()) and (
                    peeruid != n_uname if n_uname is not None else unix_user(peeruid) != uname):
                raise FsError(E.EAUTHUSER)
        if n_uname is not None:
            uname = self.user_name(n_uname) or "none"
        user = self.resolve_user(uname)
        ro = self.readonly
        if aname == "main":
            f = File(TOP, None, user, True, ro, peer)
        elif aname in ("", "root", "main/active"):
            f = File("node", self.store.root, user, False, ro or self.worm, peer)
        elif aname == "wormwr" and self.worm:
            if not self.allowed(user):
                raise FsError(E.EWORMWR)
            f = File("node", self.store.root, user, False, ro, peer)
        else:
            raise FsError(f"{E.EUNKTREE} '{aname}'")
        if aname == "main" and self.worm:
            f.readonly = True
        return f

    def clone(self, f):
        g = File(f.kind, f.node, f.user, f.top, f.readonly, f.peer)
        return g

    def walk1(self, f, name):
        d = f.node
        if d is not None and d.dir is not None and name != ".." and d.mode & AEXEC:
            n = d.live.get(name) or self.store.lookup(d, name)      # the usual walk
            if n is None:
                raise FsError(E.ENOENT)
            return File("node", n, f.user, f.top, f.readonly, f.peer)
        if not f.isdir:
            raise FsError(E.ENOTDIR)
        if f.kind == TOP:
            if name == "..":
                return self.clone(f)
            if name == "root":
                return File("node", self.store.root, f.user, True, f.readonly, f.peer)
            if name in (CONS, STATS):
                return File(name, None, f.user, True, f.readonly, f.peer)
            raise FsError(E.ENOENT)
        d = f.node
        self._need(f, d, AEXEC)
        if name == "..":
            if d.parent is not None:
                return File("node", d.parent, f.user, f.top, f.readonly, f.peer)
            if f.top and d is self.store.root:
                return File(TOP, None, f.user, True, f.readonly, f.peer)
            return self.clone(f)
        n = self.store.lookup(d, name)
        if n is None:
            raise FsError(E.ENOENT)
        return File("node", n, f.user, f.top, f.readonly, f.peer)

    def open(self, f, mode):
        if f.isopen:
            raise FsError(E.EOPEN)
        if mode & OTRUNC and self.store.freezing:
            return self._after_freeze(self.open, f, mode)
        want = _want(mode)
        writing = want & AWRITE or mode & OTRUNC
        if f.kind == TOP:
            if writing or mode & ORCLOSE:
                raise FsError(E.EPERM)
        elif f.kind in (CONS, STATS):
            self._need_synth(f, want | (AWRITE if mode & OTRUNC else 0))
            if f.kind == STATS:
                f.snapshot = self.stats_text().encode()
            else:
                f.cons = self.console.open(f, want)
        else:
            # A removed file that a fid still holds may be opened through it (POSIX: an
            # unlinked file lives while anyone holds it).
            n = f.node
            if n.mode & DMAPPEND:       # open(5): an append-only file ignores OTRUNC
                mode &= ~OTRUNC
            if n.isdir and (writing or mode & ORCLOSE):
                raise FsError(E.EISDIR)
            if writing or mode & ORCLOSE:
                self._writable(f, n)
            if mode & OTRUNC:
                want |= AWRITE
            if want & AWRITE and self._writing(f, n):
                want &= ~AWRITE
            self._need(f, n, want)
            if mode & ORCLOSE:
                if n.parent is None:
                    raise FsError(E.EPERM)
                if self._is_users(n):
                    raise FsError(E.EUSERSFILE)
                self._need(f, n.parent, AWRITE)
            if n.mode & DMEXCL:
                if n.opens > 0:
                    raise FsError(E.EEXCL)
            if mode & OTRUNC and not n.isdir and n.length:
                self._check_full()
                self.store.truncate(n, 0)
                self._modified(f, n)
            n.opens += 1
            n.atime = time.time_ns()
            if writing and self._is_users(n):
                f.wrote_users = True        # judged when clunked
            if _want(mode) & AWRITE:
                self._writer(f, n)
        f.omode = mode
        f.isopen = True

    def create(self, f, name, perm, mode):
        if f.isopen:
            raise FsError(E.EOPEN)
        if f.kind != "node" or not f.node.isdir:
            raise FsError(E.ENOTDIR if f.kind == "node" else E.EPERM)
        _check_name(name)
        if perm & ~(MODE_BITS | DMSYMLINK):    # DMSYMLINK: as 9P2000.u and arch make links
            raise FsError(E.EBADMODEBITS)
        if self.store.freezing:
            return self._after_freeze(self.create, f, name, perm, mode)
        d = f.node
        if d.removed:                   # an fid outlives its directory: nothing goes in there
            raise FsError(E.ENOENT)
        self._writable(f)
        self._check_full()
        self._need(f, d, AWRITE)
        if self.store.lookup(d, name) is not None:
            raise FsError(E.EEXIST)
        if self.store.short(more=4):
            return self._create_when_room(f, name, perm, mode)
        self._create(f, name, perm, mode)

    async def _create_when_room(self, f, name, perm, mode):
        await self._room(4)
        self._check_full()
        if f.node.removed:
            raise FsError(E.ENOENT)
        if self.store.lookup(f.node, name) is not None:
            raise FsError(E.EEXIST)
        self._create(f, name, perm, mode)

    def _create(self, f, name, perm, mode):
        d = f.node
        if perm & DMDIR:
            if _want(mode) & AWRITE or mode & OTRUNC:
                raise FsError(E.EISDIR)
            perm = perm & (~0o777 | (d.mode & 0o777))
        elif perm & DMSYMLINK:          # a link's permissions are never used (symlink(7))
            perm = DMSYMLINK | 0o777
        else:
            perm = perm & (~0o666 | (d.mode & 0o666))
        now = time.time_ns()
        n = self.store.create(d, name, perm, f.user, d.gid, now)
        self._dirtied()
        f.node.refs -= 1
        f.node = n
        n.refs += 1
        n.opens += 1
        f.omode = mode
        f.isopen = True
        self._writer(f, n)
        if self._is_users(n):
            f.wrote_users = True

    def dirents(self, f, cursor):
        """(Dir, next cursor) for the entries after cursor (None: from the start)."""
        if f.kind == TOP:
            start = 0 if cursor is None else cursor
            items = [self._stat_top_child(k) for k in ("root", CONS, STATS)]
            for i in range(start, len(items)):
                yield items[i], i + 1
            return
        d = f.node
        for name, n, e in self.store.children(d, cursor):
            yield (dir_of_entry(d, e) if n is None else self.stat_node(n, keep=False)), name

    def read(self, f, offset, count):
        """Tread (read(5)): at most count bytes of f's file from offset (bytes; fewer at the
        end of the file).  A count of PIECES or more gets a list of bytes-like pieces in
        order (the store's blocks or views of them; their concatenation is the data), so
        that a large read is never joined.  FsError: f not open for reading, a negative
        offset, a directory (directories are read by the service layer)."""
        # OEXEC reads like OREAD (open(5): "execute, == read but check execute permission").
        if not f.isopen or f.omode & 3 == OWRITE:
            raise FsError(E.ENOTOPEN if not f.isopen else E.ENOTREAD)
        if offset < 0:
            raise FsError(E.ENEGOFF)
        if f.kind == STATS:
            return f.snapshot[offset:offset + count]
        if f.kind == CONS:
            return self.console.read(f, count)
        n = f.node
        if n.isdir:
            raise FsError(E.EISDIR)
        st = self.store
        misses = st.stats["blocks_read"]
        if count >= PIECES:
            data = st.read(n, offset, count, pieces=True)
            end = offset + sum(map(len, data))
        else:
            data = st.read(n, offset, count)
            end = offset + len(data)
        # Read ahead when a small sequential read had to go to the disk: what follows is
        # likely not in memory either (when it all was, looking would cost more than it
        # saves; a read of several blocks reads them in one go already).
        if (offset == f.nextread and end < n.length and count <= 2 * st.cap
                and st.stats["blocks_read"] != misses):
            st.read_ahead(n, end, max(8 * st.cap, 4 * count))
        f.nextread = end
        return data

    def write(self, f, offset, data):
        if not f.isopen or _want(f.omode) & AWRITE == 0:
            raise FsError(E.ENOTOPEN if not f.isopen else E.ENOTWRITE)
        if offset < 0:
            raise FsError(E.ENEGOFF)
        if f.kind == STATS:
            return len(data)
        if f.kind == CONS:
            return self.console.write(f, data)
        if self.store.freezing:
            return self._after_freeze(self.write, f, offset, data)
        n = f.node
        self._check_full()
        more = len(data) // self.store.cap + 2
        if self.store.short(more=more):
            return self._write_when_room(f, n, offset, data, more)
        return self._write(f, n, offset, data)

    async def _write_when_room(self, f, n, offset, data, more):
        await self._room(more)
        self._check_full()
        return self._write(f, n, offset, data)

    def _write(self, f, n, offset, data):
        if n.mode & DMAPPEND:
            offset = n.length
        # bytes, or a read-only view (a request frame's payload: nothing changes it after
        # this), is kept by the store as it is: its whole blocks are not copied.
        keep = data.__class__ is bytes or (data.__class__ is memoryview and data.readonly)
        self.store.write(n, offset, data, keep)
        self._modified(f, n)
        return len(data)

    async def _room(self, more, use_reserve=False):
        """Make room for `more` blocks beyond what is dirty, or turn the tree full.

        When the log runs short the committer sweeps; if that is not enough it commits what is
        dirty (its old versions become garbage) and sweeps again; if the disk is still full,
        the tree becomes read-only except for removes (creepy(4)).  Returns with no freeze under
        way, so the caller changes the tree before anything else runs."""
        st = self.store
        ok = await st.make_room(more, use_reserve)
        await st.committer.thawed()
        if not ok and st.short(use_reserve, more):
            self._enter_full()
            raise FsError(E.EFULL)

    async def _after_freeze(self, fn, *args):
        """Changes to the tree wait while a freeze is under way (reads do not), then run."""
        await self.store.committer.thawed()
        r = fn(*args)
        if isawaitable(r):
            r = await r
        return r

    def clunk(self, f):
        later = None
        if self.locks.byfile:
            self.locks.release(lambda lk: lk.holder is f)
        try:
            if f.isopen:
                if f.kind == CONS:
                    self.console.close(f)
                elif f.node is not None:
                    n = f.node
                    n.opens -= 1
                    if f.writer:
                        self._unwriter(f, n)
                    if f.omode & ORCLOSE and not n.removed:
                        try:
                            later = self._remove(f, n, check=False)
                        except FsError as e:
                            self.log(f"remove on close of {n.pathname()}: {e.ename}")
                    if f.wrote_users and not n.removed:
                        self._reload_users(f, n)
        finally:
            if later is None:
                self._release(f)
        if later is not None:
            return self._clunk_after(f, later)

    async def _clunk_after(self, f, removing):
        n = f.node
        try:
            await removing
        except FsError as e:
            self.log(f"remove on close of {n.pathname()}: {e.ename}")
        finally:
            self._release(f)

    def _release(self, f):
        f.isopen = False
        n = f.node
        f.release()
        if n is not None and n.removed:
            self.store.release(n)

    def remove(self, f):
        """Remove the file; the service layer clunks the fid afterwards, whatever happened."""
        if f.kind != "node":
            raise FsError(E.EBUILTIN)
        return self._remove(f, f.node, check=True)

    def _remove(self, f, n, check):
        if n.removed:
            raise FsError(E.ENOENT)
        if n.parent is None:
            raise FsError("can't remove the root directory")
        if self._is_users(n):
            raise FsError(E.EUSERSFILE)     # as wstat refuses to rename it away
        if check:
            self._writable(f, n)
            self._need(f, n.parent, AWRITE)
        if n.isdir and not self.store.isempty(n):
            raise FsError(E.ENOTEMPTY)
        st = self.store
        if st.freezing or (self.full and st.short(True, _remove_cost(n))):
            return self._remove_when_room(f, n, check)
        st.unlink(n, f.user, time.time_ns())
        self._dirtied()

    async def _remove_when_room(self, f, n, check):
        """A remove waits for a freeze to end; on a full disk it also waits for room in the
        reserve kept for removes (a commit of removes always fits)."""
        await self.store.committer.thawed()
        if self.full:
            await self._room(_remove_cost(n), use_reserve=True)
        r = self._remove(f, n, check)
        if isawaitable(r):
            await r

    def stat(self, f):
        if f.kind == TOP:
            return Dir(f.qid, DMDIR | 0o555, int(self.started), int(self.started), 0, "/",
                       self.owner, self.owner, self.owner)
        if f.kind in (CONS, STATS):
            return self._stat_top_child(f.kind)
        return self.stat_node(f.node)

    def stat_node(self, n, keep=True):
        """n's stat; kept on the node until a change (vers) or an access (atime) alters it.
        keep=False uses one kept but keeps no new one (a directory listing adds no memory
        to the nodes it passes)."""
        c = n.statcache
        if c is not None and c[0] == n.vers and c[1] == n.atime:
            return c[2]
        d = self._stat_node(n)
        if keep:
            n.statcache = (n.vers, n.atime, d)
        return d

    def _stat_node(self, n):
        return Dir(qid_of_mode(n.mode, n.vers, n.qpath), n.mode, n.atime // 1_000_000_000,
                   n.mtime // 1_000_000_000, 0 if n.isdir else n.length,
                   "root" if n is self.store.root else n.name, n.uid, n.gid, n.muid)

    def _stat_top_child(self, kind):
        if kind == "root":
            return self.stat_node(self.store.root)
        t = int(self.started)
        if kind == CONS:
            return Dir((0, 0, SYNTH_PATH[CONS]), 0o660, t, t, 0, CONS, self.owner,
                       "adm", self.owner)
        return Dir((0, 0, SYNTH_PATH[STATS]), 0o664, t, t, 0, STATS, self.owner, "adm",
                   self.owner)

    def wstat(self, f, st):
        """Change what st asks for, all or nothing; a wstat that asks for nothing is a request
        to commit the file to stable storage (9P2000 has no fsync), answered after the sync.
        A field equal to the file's current value is no change (stat(5)), so a client may send
        back the whole Dir it got from Tstat with one field changed; qid and muid cannot be
        changed, and a wstat that tries is refused whole."""
        nothing = (st.name == "" and st.length == NOCHANGE64 and st.mode == NOCHANGE32
                   and st.mtime == NOCHANGE32 and st.gid == "" and st.uid == ""
                   and st.muid == "" and st.atime == NOCHANGE32)
        if nothing:
            return self._sync_for_client()
        if f.kind != "node":
            raise FsError(E.EBUILTIN)
        if self.store.freezing:
            return self._after_freeze(self.wstat, f, st)
        n = f.node
        q = f.qid
        for want, have, keep in zip(st.qid, q, (0xFF, NOCHANGE32, NOCHANGE64)):
            if want != keep and want != have:
                raise FsError(E.EWSTAT)
        if st.muid not in ("", n.muid):
            raise FsError(E.EWSTAT)
        mtime = st.mtime
        if mtime != NOCHANGE32:
            mtime = None if mtime == n.mtime // 1_000_000_000 else mtime * 1_000_000_000
        else:
            mtime = None
        self._wstat(f, n, name=st.name, length=st.length, mode=st.mode, mtime=mtime,
                    gid=st.gid, uid=st.uid)

    def _wstat(self, f, n, name="", length=NOCHANGE64, mode=NOCHANGE32, mtime=None,
               gid="", uid="", atime=None, newdir=None, touch=False):
        """The checks and changes of wstat and of 9P2000.L's setattr and renames, all or
        nothing.  mtime, atime: ns or None; touch: they are "now", which needs only write
        permission (utimes(2)); newdir: a rename into another directory (name is then the
        new name).  A removed file that is still open may change in every way but its name."""
        if name == n.name and newdir in (None, n.parent):
            name = ""
        if length == n.length and not n.isdir:
            length = NOCHANGE64
        if mode == n.mode:
            mode = NOCHANGE32
        if gid == n.gid:
            gid = ""
        if uid == n.uid:
            uid = ""
        if not (name or gid or uid or length != NOCHANGE64 or mode != NOCHANGE32
                or mtime is not None or atime is not None):
            return                      # nothing to change (Linux's setattr of ctime alone)
        self._writable(f, n)
        self._check_full()              # when full only removes change the tree
        user = f.user
        allowed = self.allowed(user)
        owner = user == n.uid or allowed
        leader = owner or self.users.isleader(user, n.gid)
        rename = name != ""
        if rename:
            self._check_rename(f, n, newdir or n.parent, name)
        if length != NOCHANGE64:
            if n.isdir:
                if length != 0:
                    raise FsError(E.EDIRLEN)
                length = NOCHANGE64
            elif n.mode & DMAPPEND:     # stat(5): an append-only file only grows by writes
                raise FsError(E.EWSTAT)
            else:
                if not f.isopen or _want(f.omode) & AWRITE == 0:
                    self._need_write(f, n)
                if length > self.store.max_blocks * self.store.cap:
                    raise FsError(E.EBIGFILE)
                if self._is_users(n) and length != n.length:
                    usersdata = self._users_bytes(n, length)
                    newusers = self._judge_users(usersdata)
        if mode != NOCHANGE32:
            if mode & ~(MODE_BITS | DMSYMLINK):
                raise FsError(E.EBADMODEBITS)
            if (mode ^ n.mode) & (DMDIR | DMSYMLINK):
                raise FsError(E.EDIRMODE)
            if not leader:
                raise FsError(E.ENOTOWNER)
        if (mtime is not None or atime is not None) and not leader:
            if not touch:
                raise FsError(E.ENOTOWNER)
            self._need_write(f, n)
        if gid != "" and gid != n.gid:
            if not self.users.exists(gid) and not (self.worm and allowed):
                raise FsError(E.EBADUSER)
            if not (allowed or (user == n.uid and self.users.ismember(user, gid))
                    or (self.users.isleader(user, n.gid) and self.users.isleader(user, gid))):
                raise FsError(E.ENOTMEMBER if user == n.uid else E.ENOTOWNER)
        if uid != "" and uid != n.uid:
            if not allowed:
                raise FsError(E.ENOTOWNER)
            if not self.users.exists(uid) and not self.worm:
                raise FsError(E.EBADUSER)
        # Every check passed: apply.
        now = time.time_ns()
        if rename:
            self.store.rename(n, name, user, now, newdir)
        if length != NOCHANGE64:
            self.store.truncate(n, length)
            n.mtime = now
            n.muid = user
            if self._is_users(n):
                self._install_users(newusers, usersdata)
        if mode != NOCHANGE32:
            n.mode = mode
        if mtime is not None:
            n.mtime = mtime
        if atime is not None:
            n.atime = atime
        if gid != "":
            n.gid = gid
        if uid != "":
            n.uid = uid
        self.store.changed(n)
        self._dirtied()

    async def link(self, src, dst, user):
        """The console's link: paths are relative to /root; dst must not exist."""
        st = self.store
        if self.readonly and not self.worm:
            raise FsError(E.EREADONLY)
        s = self.resolve(src)
        parts = [p for p in dst.split("/") if p]
        if not parts:
            raise FsError(E.EEXIST)
        _check_name(parts[-1])
        d = self.resolve("/".join(parts[:-1]))
        if not d.isdir:
            raise FsError(E.ENOTDIR)
        if st.lookup(d, parts[-1]) is not None:
            raise FsError(E.EEXIST)
        if s.dirty:
            await self.sync()
            s = self.resolve(src)
            d = self.resolve("/".join(parts[:-1]))
            if st.lookup(d, parts[-1]) is not None:
                raise FsError(E.EEXIST)
        await st.committer.thawed()
        self._check_full()
        self._check_stopped()
        if st.lookup(d, parts[-1]) is not None:
            raise FsError(E.EEXIST)
        st.link(s, d, parts[-1], user, time.time_ns())
        self._dirtied()

    def resolve(self, path):
        """The node at path (relative to /root), with no permission checks (console use)."""
        n = self.store.root
        for name in (p for p in path.split("/") if p):
            if not n.isdir:
                raise FsError(E.ENOTDIR)
            n = self.store.lookup(n, name)
            if n is None:
                raise FsError(f"{E.ENOENT}: {path}")
        return n

    # --- 9P2000.L: what Linux asks beyond 9P2000 ---------------------------------------------
    #
    # The session (creepy/ninep/session.py) turns POSIX flags into 9P2000 open modes; these
    # are the operations 9P2000 has no message for, and the numeric view of users.

    def user_number(self, name):
        """The numeric uid/gid 9P2000.L shows for a user or group name (users.py)."""
        memo = self._numbers
        if memo[0] is not self.users:           # a users file was loaded since
            memo = self._numbers = (self.users, {})
        n = memo[1].get(name)
        if n is None:
            n = memo[1][name] = self.users.number(name)
        return n

    def user_name(self, number):
        """The user a numeric id stands for, or None."""
        return self.users.by_number(number)

    def getattr(self, f):
        """The file's attributes as POSIX sees them (stat(2)), times in ns."""
        if f.node is None:
            d = self.stat(f)
            return Attr(f.qid, d.mode, d.uid, d.gid, d.length, d.atime * 1_000_000_000,
                        d.mtime * 1_000_000_000)
        n = f.node
        return Attr(f.qid, n.mode, n.uid, n.gid, 0 if n.isdir else n.length, n.atime,
                    n.mtime)

    def setattr(self, f, mode=None, uid=None, gid=None, length=None, atime=None, mtime=None,
                touch=False):
        """Change what is not None, all or nothing, with wstat's rules (and POSIX's for
        times set to now: write permission is enough).  mode: permission bits only."""
        if f.kind != "node":
            raise FsError(E.EBUILTIN)
        if self.store.freezing:
            return self._after_freeze(self.setattr, f, mode, uid, gid, length, atime, mtime,
                                      touch)
        n = f.node
        self._wstat(f, n, length=NOCHANGE64 if length is None else length,
                    mode=NOCHANGE32 if mode is None else (n.mode & ~0o777) | (mode & 0o777),
                    uid="" if uid is None else uid, gid="" if gid is None else gid,
                    mtime=mtime, atime=atime, touch=touch)

    def rename(self, f, d, name):
        """Move f's file into directory d (a File) as `name`, replacing what is there as
        rename(2) does."""
        if f.kind != "node" or d.kind != "node":
            raise FsError(E.EBUILTIN)
        if self.store.freezing:
            return self._after_freeze(self.rename, f, d, name)
        self._wstat(f, f.node, name=name, newdir=d.node)

    def child(self, d, name):
        """A new File for the entry `name` of directory d, without the walk's search check
        (the caller checks what its operation needs); FsError(ENOENT) if there is none."""
        if d.kind != "node" or not d.node.isdir:
            raise FsError(E.ENOTDIR)
        n = self.store.lookup(d.node, name)
        if n is None:
            raise FsError(E.ENOENT)
        return File("node", n, d.user, d.top, d.readonly, d.peer)

    def unlink(self, d, name, isdir):
        """unlinkat(2): remove the entry `name` of directory d; isdir says it must be a
        directory (AT_REMOVEDIR), else it must not be one."""
        f = self.child(d, name)
        try:
            if f.node.isdir != isdir:
                raise FsError(E.ENOTDIR if isdir else E.EISDIR)
            r = self.remove(f)
        except BaseException:
            self.clunk(f)
            raise
        if isawaitable(r):              # a freeze or a full disk made it wait

            async def later():
                try:
                    await r
                finally:
                    self.clunk(f)
            return later()
        self.clunk(f)

    def symlink(self, d, name, target):
        """Make `name` in directory d a symbolic link to target; its qid.  The link's
        content is its target (DMSYMLINK in its mode)."""
        f = self.clone(d)
        try:
            r = self.create(f, name, DMSYMLINK | 0o777, OWRITE)
        except BaseException:
            self.clunk(f)
            raise
        return _then(r, lambda: self._symlink_write(f, target))

    def _symlink_write(self, f, target):
        try:
            self.store.write(f.node, 0, target.encode("utf-8"))
            self._modified(f, f.node)
            return f.qid
        finally:
            self.clunk(f)

    def mkdir(self, d, name, perm):
        """Make directory `name` in d with perm's permission bits; its qid."""
        f = self.clone(d)
        try:
            r = self.create(f, name, DMDIR | (perm & 0o777), OREAD)
        except BaseException:
            self.clunk(f)
            raise
        return _then(r, lambda: self._qid_and_clunk(f))

    def _qid_and_clunk(self, f):
        q = f.qid
        self.clunk(f)
        return q

    def readlink(self, f):
        """The target of a symbolic link."""
        n = f.node
        if n is None or not n.mode & DMSYMLINK:
            raise FsError(E.EINVAL)
        return self.store.read(n, 0, n.length).decode("utf-8", "replace")

    def statfs(self, f):
        """(block size, blocks, free blocks, blocks free to clients, longest name) of the
        disk: the log's own counts (blocks behind the sweep's cursor are counted free only
        after the sweep that finds them)."""
        st = self.store
        lg = st.log
        total = lg.nblocks - lg.start
        free = min(lg.avail, total)
        return st.bsize, total, free, max(0, free - st.committer.reserve), MAXNAME

    def fsync(self, f):
        """Commit the tree to stable storage (fsync(2)): answered after the commit."""
        return self._sync_for_client()

    def lock(self, f, ltype, start, length, proc_id, client_id):
        """fcntl(2) F_SETLK on f's file for the client's process: a locks.* status."""
        return self.locks.lock(self._lockkey(f), (id(f.peer), client_id, proc_id), ltype,
                               start, length, f, proc_id, client_id)

    def getlock(self, f, ltype, start, length, proc_id, client_id):
        """fcntl(2) F_GETLK: (type, start, length, proc_id, client_id) of a lock in the way,
        or UNLCK and the request's own range when there is none."""
        lk = self.locks.conflict(self._lockkey(f), (id(f.peer), client_id, proc_id), ltype,
                                 start, length)
        if lk is None:
            return UNLCK, start, length, proc_id, client_id
        return (lk.type, lk.start, 0 if lk.end >= END else lk.end - lk.start, lk.proc_id,
                lk.client_id)

    @staticmethod
    def _lockkey(f):
        return f.node if f.node is not None else f.kind

    # --- helpers ---------------------------------------------------------------------------

    def _need(self, f, n, want):
        if n.mode & want == want:       # the "other" bits grant it to everyone: the usual case
            return
        if (want and not self.allowed(f.user)
                and not self.users.access(f.user, n.uid, n.gid, n.mode, want)
                and not self._owner_reaches(f, n, want)):
            raise FsError(E.EPERM)

    def _writing(self, f, n):
        """f's connection has n open for writing (or created) already (see writers)."""
        who = self.writers.get(n)
        return who is not None and id(f.peer) in who

    def _writer(self, f, n):
        who = self.writers.setdefault(n, {})
        key = id(f.peer)
        who[key] = who.get(key, 0) + 1
        f.writer = True

    def _unwriter(self, f, n):
        who = self.writers.get(n)
        key = id(f.peer)
        if who is not None and key in who:
            who[key] -= 1
            if who[key] <= 0:
                del who[key]
                if not who:
                    del self.writers[n]

    def _need_write(self, f, n):
        """Write permission on n for f's user, or its connection's open for writing."""
        if not self._writing(f, n):
            self._need(f, n, AWRITE)

    def _check_rename(self, f, n, d, name):
        """May f's user give n the name `name` in directory d (rename(2) semantics: a file
        replaces a file, a directory an empty directory)?"""
        _check_name(name)
        if n.removed:
            raise FsError(E.ENOENT)
        if n.parent is None:
            raise FsError(E.EPERM)
        if d.removed:
            raise FsError(E.ENOENT)
        if not d.isdir:
            raise FsError(E.ENOTDIR)
        self._need(f, n.parent, AWRITE)
        if d is not n.parent:
            self._need(f, d, AWRITE)
            # A file keeps its qid: it may not move to where its qid.path would differ (a
            # tree made by link has a qid space of its own), nor may a directory whose
            # files might.  rename(2) says EXDEV; mv copies instead.
            if (d.qchain != n.parent.qchain if n.isdir
                    else qpath_in(n.path, d.qchain) != n.qpath):
                raise FsError(E.EXDEV)
            p = d
            while p is not None:        # a directory cannot move below itself
                if p is n:
                    raise FsError(E.ERENAMELOOP)
                p = p.parent
        other = self.store.lookup(d, name)
        if other is not None and other is not n:
            if other.isdir:
                if not n.isdir:
                    raise FsError(E.ERENAMEDIR)
                if not self.store.isempty(other):
                    raise FsError(E.ENOTEMPTY)
            elif n.isdir:
                raise FsError(E.ENOTDIR)
        root = self.store.root
        if (n.parent is root and n.name == USERS_FILE) or (d is root and name == USERS_FILE):
            raise FsError(E.EUSERSFILE)

    def _need_synth(self, f, want):
        if f.user == self.owner or self.allowed(f.user):
            return
        st = self._stat_top_child(f.kind)
        if not self.users.access(f.user, st.uid, st.gid, st.mode, want):
            raise FsError(E.EPERM)

    def _writable(self, f, n=None):
        """May f change the tree (n, when given, is what it changes)?  Not through a read-only
        attach; with a write group, only its members and allowed users (creepy(4), fossil),
        and the server's owner for the users file."""
        if f.readonly:
            raise FsError(E.EREADONLY)
        self._check_stopped()
        if not (self.users.canwrite(f.user) or self.allowed(f.user)
                or (n is not None and self._owner_reaches(f, n, AWRITE))):
            raise FsError(E.EPERM)

    def _check_full(self):
        if self.full:
            raise FsError(E.EFULL)

    def _check_stopped(self):
        c = self.store.committer
        if c.why is not None:
            raise StoreStopped(c.why)

    def _modified(self, f, n):
        n.mtime = time.time_ns()
        n.muid = f.user
        self.store.changed(n)
        self._dirtied()

    def _dirtied(self):
        if self.store.dirty_bytes() > self.dirty_limit and self.syncs_wanted is not None:
            self.syncs_wanted.set()

    # --- sync policy -----------------------------------------------------------------------

    async def sync(self):
        """Sync now.  A disk that stays full after a sweep turns the tree read-only except for
        removes; a later sync that finds room again (removes made garbage for the sweep)
        makes it writable, once twice the reserve is free beyond what is dirty, so that the
        tree does not flip between the two modes with every write."""
        st = self.store
        try:
            wrote = await st.sync(use_reserve=self.full)
        except DiskFull:
            self._enter_full()
            raise FsError(E.EFULL)
        if self.full and await st.make_room(st.committer.reserve):
            self.full = False
            self.console.say(f"the disk has room again ({st.log.avail} blocks free): "
                             f"the tree is writable")
            self.log("disk has room again: the tree is writable")
        return wrote

    def _enter_full(self):
        if not self.full:
            self.full = True
            self.console.say("disk full: the tree is read-only except for removes")
            self.log("disk full: the tree is read-only except for removes")

    async def _sync_for_client(self):
        await self.sync()

    def start(self):
        """Start the periodic syncer (call from the event loop)."""
        if self.syncs_wanted is None:
            self.syncs_wanted = asyncio.Event()
        self._syncer = asyncio.get_running_loop().create_task(self._sync_loop())

    async def _sync_loop(self):
        while not self.halted:
            try:
                await asyncio.wait_for(self.syncs_wanted.wait(), self.sync_interval)
            except asyncio.TimeoutError:
                pass
            self.syncs_wanted.clear()
            if self.halted:
                break
            if self.store.dirty and self.store.committer.why is None:
                try:
                    await self.sync()
                except FsError as e:
                    self.log(f"sync: {e.ename}")
                except Exception as e:  # keep the syncer alive; say why it failed
                    self.log(f"sync failed: {e!r}")

    async def halt(self):
        """Sync and stop: the console's halt, SIGTERM and SIGINT."""
        if self.halted:
            return
        try:
            await self.sync()
        finally:
            await self.store.committer.drain()
            self.halted = True
            if self._syncer is not None:
                self._syncer.cancel()
            if self.on_halt is not None:
                self.on_halt()

    # --- /stats ----------------------------------------------------------------------------

    def mode_name(self):
        why = self.store.committer.why
        if why is not None:
            return f"stopped: {why}"
        if self.readonly:
            return "read-only"
        if self.full:
            return "full: read-only except for removes"
        return "read-write"

    def stats_text(self):
        st = self.store
        s = st.stats
        lg = st.log
        lines = [
            f"disk:\t{st.kind} {st.bsize} byte blocks, {lg.nblocks} total",
            f"blocks:\t{lg.used()} used {lg.avail} free",
            f"mode:\t{self.mode_name()}",
            f"era:\t{st.era} (committed {st.committed_era})",
            f"commit:\t{st.committer.state}, era {st.committer.durable_era} durable, "
            f"{s['retries']} retries, {len(st.committer._jobs)} waiting",
            f"dirty:\t{st.nmelted} blocks ({st.dirty_bytes()} bytes; {st.kept_bytes} bytes of "
            f"frames kept)",
            f"cache:\t{st.cache.used} bytes of {st.cache.limit}, {len(st.cache)} blocks, "
            f"{st.cache.hits} hits {st.cache.misses} misses {st.cache.evictions} evictions",
            f"syncs:\t{s['syncs']} last {s['last_sync_s'] * 1e3:.1f} ms mean "
            f"{(s['sync_s'] / s['syncs'] * 1e3) if s['syncs'] else 0:.1f} ms "
            f"errors {s['sync_errors']}",
            f"freeze:\t{s['last_freeze_s'] * 1e3:.1f} ms, {s['last_freeze_slices']} slices "
            f"(the last one)",
            f"sweeps:\t{s['sweeps']} last {s['last_sweep_s'] * 1e3:.1f} ms, "
            f"{s['swept_live']} blocks live",
            f"disk io:\t{s['blocks_written']} blocks written {s['blocks_read']} read "
            f"{s['corrupt']} corrupt",
            f"users:\t{len(self.users.names())} known, {len(self.peers)} connected",
        ]
        lines.extend(f"warning:\t{w}" for w in st.warnings)
        for src in self.stats_sources:
            lines.extend(src())
        return "\n".join(lines) + "\n"


def _want(mode):
    return (AREAD, AWRITE, AREAD | AWRITE, AEXEC)[mode & 3]


def _check_name(name):
    if name in ("", ".", "..") or "/" in name or "\0" in name:
        raise FsError(E.EBADNAME)
    if len(name.encode()) > MAXNAME:
        raise FsError(E.ENAMETOOLONG)


def _has_loop():
    try:
        asyncio.get_running_loop()
        return True
    except RuntimeError:
        return False


def _remove_cost(n):
    """Blocks a remove may melt: a B+tree path of the parent and of each directory above it."""
    depth = 0
    p = n.parent
    while p is not None:
        depth += 1
        p = p.parent
    return 4 * (depth + 1)
