"""One 9P connection's protocol state, without I/O: frames in, replies and pending work out.

A Session holds what 9P keeps per connection (the dialect and msize negotiated by Tversion,
fids, tags in flight, directory-read positions) and the protocol rules that do not depend on
what a file is.  It never touches a socket, a clock it waits on, or an event loop: whoever owns
the connection (server.py's asyncio adapter, a test, a fuzzer) feeds it whole frames and takes
what it produced, in the shape of h11:

    session.framer          cuts the received byte stream into frames (codec.Framer)
    session.receive(frame)  handles one frame
    session.out             encoded replies ready to send, in order (list of bytes-like): a
                            reply is one part, or for a large read its header and the pieces
                            of its payload; session.out_bytes counts them, session.out_big
                            says a large payload is among them (better not copied).  The
                            owner writes them and resets all three.
    session.started         Work begun since the owner last looked: requests whose backend
                            call returned an awaitable.  The owner runs each `work.coro` and
                            hands the outcome back with session.complete(work, result).
    session.pending_bytes   the frames of the requests in flight (Work not yet completed,
                            flushed or aborted), in bytes: what a waiting Twrite holds
    session.background      awaitables with nobody to answer (clunks of fids a Tversion or a
                            hang-up dropped); the owner runs them and logs their errors.
    session.closing         None, or why the connection must close (a lost frame boundary)

Backend contract (the object passed as `fs`)
-------------------------------------------
Errors: a backend call may raise any exception.  One with a str attribute `ename` is a Plan 9
error and is answered Rerror(ename); any other is logged and answered Rerror("internal error:
<text>"), and the connection keeps serving.

A file is any object with `qid` (a (type, vers, path) 3-tuple, e.g. codec.Qid) and `isdir`.

    connect(peer), disconnect(peer)    a connection starts / ends (after its fids are clunked)
    auth(peer, uname, aname) -> file   the auth file for Tauth; raise to refuse
    attach(peer, uname, aname) -> file the root; attach(peer, uname, aname, afile) when the
                                       client names an auth fid
    clone(file) -> file                a new, unopened reference to the same file
    walk1(file, name) -> file          a new object for the child; name is never '', '.',
                                       has no '/' or NUL, is at most 255 bytes; '..' means parent
    open(file, mode)                   [*]  then file is open; reply qid is file.qid
    create(file, name, perm, mode)     then file is the new file, open with mode  [*]
    read(file, offset, count) -> bytes       [*]  never called for directories; bytes-like,
                                       or a list of bytes-like pieces written in order as
                                       they are (a large read: nothing is joined)
    dirents(file, cursor) -> iterable of (stat, next_cursor)
                                       entries of a directory from cursor (None: the start)
    write(file, offset, data) -> int         [*]  data is the payload of the request frame,
                                       bytes or (large) a read-only view of the frame, which
                                       nothing changes afterwards: it may be kept as it is
    clunk(file)                              [*]  the fid is gone, whatever happens
    remove(file)                             [*]  then clunk(file) follows, success or not
    stat(file) -> stat                 any object with codec.Stat's attributes
    wstat(file, stat)                        [*]  stat is a decoded codec.Stat

For 9P2000.L the backend also offers getattr, setattr, rename, child, unlink, symlink, mkdir,
readlink, statfs, fsync, lock, getlock, user_number and user_name (creepy/fs/fs.py documents
each); setattr, rename, unlink, symlink, mkdir and fsync are [*] too.

[*] may return an awaitable instead of the value: the request then runs as Work while the
connection keeps serving others, and its reply goes out when it completes.  Every other call
must return its value.  File objects from walk1 and clone that never get bound to a fid
(intermediate walk steps, failed walks) are simply dropped; clunk is called exactly once for
each file that was bound to a fid: on Tclunk, after Tremove, on Tversion, on disconnect.

Protocol rules kept here
------------------------
- Before Tversion only Tversion is served, and a frame larger than PRE_VERSION_FRAME closes
  the connection (nobody has agreed to a larger one yet).  A version of "9P2000" or
  "9P2000.<anything>" is answered "9P2000"; anything else "unknown".  msize = min(client's,
  ours) and at least 256.  Tversion aborts the session: in-flight requests are cancelled
  unanswered, fids are clunked.
- Many requests in flight per connection; replies go out in completion order.  Tflush
  cancels the flushed request and answers Rflush at once: after Rflush nothing is ever sent
  for the old tag.  A request that already answered is not affected.
- Walk: up to 16 names; newfid may equal fid; the fid must not be open (walk(5)), except
  that an open fid may be cloned (0 names) to another fid, as Linux does to reopen an
  unlinked file; 0 names clone; failure at the first name is an error, a later failure
  answers the qids walked so far and leaves newfid unset.
- Directory reads: offset 0 restarts; any other offset must be where the previous read on
  that fid ended ("bad offset in directory read"); whole stat entries only.  If the next
  entry alone does not fit in count the read fails with "i/o count too small" (Plan 9's
  devdirread does the same) and the entry is kept, so a retry with a larger count works.
- Tread count is clamped to msize - 24 (IOHDRSZ); iounit is always msize - 24.
- Every reply is checked against msize where it is encoded (one place): one that does not
  fit is answered Rerror instead.
- Limits per connection: fids (max_fids), requests in flight (max_tags).
- A frame whose size field is < 7 or > msize closes the connection; any other malformed
  frame is answered Rerror on its tag.
"""

import struct
import time
from inspect import CORO_CREATED, getcoroutinestate, isawaitable

from creepy import errors as E

from . import codec
from .codec import (
    DMSYMLINK, HEADER, IOHDRSZ, NOFID, NONUNAME, OEXEC, OREAD, ORDWR, OTRUNC, OWRITE, Framer,
    Message, ProtocolError, Rattach, Rauth, Rclunk, Rcreate, Rerror, Rflush, Rlerror, Ropen,
    Rread, Rremove, Rstat, Rversion, Rwalk, Rwrite, Rwstat, encode, pack_dirent, pack_stat,
)

__all__ = ['Session', 'Peer', 'Work', 'Error', 'MIN_MSIZE', 'PRE_VERSION_FRAME', 'VERSION']

MIN_MSIZE = 256
#: the largest frame taken before Tversion agreed on an msize (a Tversion is far smaller)
PRE_VERSION_FRAME = 8192
MAXNAME = 255                           # bytes in a file name
VERSION = '9P2000'
VERSION_L = '9P2000.L'

# Linux's values for what 9P2000.L carries (fcntl.h, stat.h, dirent.h, the kernel's 9p.h).
O_ACCMODE, O_TRUNC = 3, 0o1000
AT_REMOVEDIR = 0x200
S_IFDIR, S_IFREG, S_IFLNK = 0o040000, 0o100000, 0o120000
DT_DIR, DT_REG, DT_LNK = 4, 8, 10
GETATTR_BASIC = 0x7FF                   # mode nlink uid gid rdev atime mtime ctime ino size blocks
SETATTR_MODE, SETATTR_UID, SETATTR_GID, SETATTR_SIZE = 1, 2, 4, 8
SETATTR_ATIME, SETATTR_MTIME, SETATTR_ATIME_SET, SETATTR_MTIME_SET = 0x10, 0x20, 0x80, 0x100
V9FS_MAGIC = 0x01021997                 # statfs f_type of a 9P file system
# Readdir offsets a fid remembers (the kernel continues from the last one it was given).
MAXMARKS = 4096

# Rread payloads at least this long (or in pieces) are handed to the owner as parts of their
# own after the header, so that it can write them without copying them into one frame.
BIG_PAYLOAD = 1 << 16

# One request in TIME_EVERY of each type is timed for the mean latency in /stats.
TIME_EVERY = 8

# Requests answered even when max_tags requests are in flight: they are how a client at the
# limit makes room (Tflush) or starts over (Tversion).
_ALWAYS = frozenset((codec.Tflush.type, codec.Tversion.type))
_TVERSION = codec.Tversion.type


class Error(Exception):
    """A protocol-level refusal, answered as Rerror(ename)."""

    def __init__(self, ename):
        super().__init__(ename)
        self.ename = ename


class Peer:
    """One client connection as the backend and the console see it.

    addr: 'tcp!host!port' or 'unix!/path/of/the/socket'
    cred: (pid, uid, gid) of the connecting process for Unix sockets, None for TCP
    uname: the uname of the latest successful attach, None before
    transport: 'tcp' or 'unix'
    msize: the negotiated message size, 0 before Tversion
    """

    __slots__ = ('addr', 'cred', 'uname', 'transport', 'msize')

    def __init__(self, addr, cred, transport):
        self.addr = addr
        self.cred = cred
        self.uname = None
        self.transport = transport
        self.msize = 0

    def __repr__(self):
        return 'Peer(%r, cred=%r, uname=%r)' % (self.addr, self.cred, self.uname)


class _Fid:
    """A fid's state: its file, open mode (-1: not open), and directory-read position."""

    __slots__ = ('file', 'mode', 'isdir', 'dir_offset', 'dir_cursor', 'dir_pending', 'marks')

    def __init__(self, file, mode=-1):
        self.file = file
        self.mode = mode
        self.isdir = False
        self.dir_offset = 0         # where the last directory read ended
        self.dir_cursor = None      # backend cursor of the entry after dir_pending
        self.dir_pending = None     # a packed entry that did not fit in the last read
        self.marks = None           # 9P2000.L readdir: offset -> where to go on from there


class Work:
    """A request whose backend call returned an awaitable: the owner runs `coro` (which
    returns the reply) and calls Session.complete.  `task` is the owner's handle on it, with
    asyncio.Task's get_coro() and cancel(); None until the owner starts it."""

    __slots__ = ('tag', 'coro', 'backend', 'counter', 't0', 'task', 'dead', 'size')

    def __init__(self, tag, coro, backend, counter, t0, size=0):
        self.tag = tag
        self.size = size            # its frame, in bytes (what the request may still hold)
        self.coro = coro
        self.backend = backend      # the backend's awaitable inside coro, or None
        self.counter = counter
        self.t0 = t0
        self.task = None
        self.dead = False           # flushed before it started: never run it

    def stop(self):
        """Cancel the request, whose tag is already forgotten so it will not answer.

        A request that has not started never will: its coroutines (the handler's wrapper and
        the backend's awaitable inside it) are closed unstarted, so a flushed request that
        arrived in the same buffer as its Tflush has no effect at all (flush(5): a request
        with no reply before the Rflush is as though it had never been sent)."""
        task = self.task
        if task is None or getcoroutinestate(task.get_coro()) == CORO_CREATED:
            for aw in (self.coro, self.backend):
                if hasattr(aw, 'close'):
                    aw.close()
        if task is None:
            self.dead = True
        else:
            task.cancel()


def _check_name(name, dotdot_ok):
    """Raise Error unless name may be a walk (dotdot_ok) or create name."""
    if '/' in name or '\0' in name:
        raise Error(E.EBADNAME)
    if name == '' or name == '.' or (name == '..' and not dotdot_ok):
        raise Error(E.EILLEGALNAME)
    # A char is at most 4 bytes of UTF-8: short names need no encoding to be measured.
    if len(name) > MAXNAME // 4 and len(name.encode('utf-8')) > MAXNAME:
        raise Error(E.ENAMETOOLONG)


class Session:
    """The 9P state of one connection (see the module docstring)."""

    def __init__(self, fs, peer, *, msize, max_fids=65536, max_tags=256, counters=None,
                 log=None, ahead=None):
        self.fs = fs
        self.peer = peer
        self.max_msize = msize
        self.max_fids = max_fids
        self.max_tags = max_tags
        self.counters = counters if counters is not None else {}
        self.log = log
        self.framer = Framer(PRE_VERSION_FRAME, ahead)
        self.msize = 0
        self.iounit = 0
        self.fids = {}
        self.inflight = {}          # tag -> Work of a request answered later
        self.pending_bytes = 0      # the frames of those requests, in bytes
        self.out = []
        self.out_bytes = 0
        self.out_big = False        # out holds a part of at least BIG_PAYLOAD bytes
        self.started = []
        self.background = []
        self.closing = None
        self._backend = None
        self.xattrs = {}            # fid -> the bytes an xattr fid reads (9P2000.L)
        for version, (_, handlers, _) in TABLES.items():
            for mtype in (*handlers, *HOT[version]):
                if mtype not in self.counters:
                    self.counters[mtype] = [0, 0.0, 0]
        self.dialect(VERSION)

    def dialect(self, version):
        """Speak `version` from now on: its decoders, handlers and error reply (TABLES).
        Its hot requests (HOT) are taken once a Tversion has agreed on an msize."""
        table, self.handlers, self.error = TABLES[version]
        self._decode = table.decode
        self.version_name = version
        # type -> (unpack, handler, its counter)
        counters = self.counters
        self.hot = ({mtype: (unpack, handler, counters[mtype])
                     for mtype, (unpack, handler) in HOT[version].items()}
                    if self.msize else {})

    @staticmethod
    def _rerror(tag, ename):
        return Rerror(tag, ename)

    @staticmethod
    def _rlerror(tag, ename):
        return Rlerror(tag, E.errno_of(ename))

    # -- frames in ----------------------------------------------------------------------

    def receive(self, frame):
        """Handle one whole frame: its reply goes to out, or its Work to started.

        The hot requests (HOT: walk, stat, clunk, open, create, read, write, remove and their
        9P2000.L kin) are handled from their fields, unpacked straight from the frame, and
        answer with the reply frame itself: no message object either way.  Every other
        request is decoded into its message first."""
        try:
            size, mtype, tag = HEADER.unpack_from(frame)
        except struct.error:
            size = mtype = -1
        hot = self.hot.get(mtype) if size == len(frame) else None
        if hot is not None:
            unpack, handler, counter = hot
            msg = None
        else:
            try:
                msg = self._decode(frame)
            except ProtocolError as e:
                if e.fatal or e.tag is None:
                    self.closing = str(e)
                else:
                    self.emit(self.error(e.tag, self.fit(str(e))))
                return
            tag = msg.tag
            mtype = msg.type
            handler = self.handlers.get(mtype)
            if handler is None:         # (a hot request before Tversion comes this way)
                hot = not self.msize and mtype in HOT[self.version_name]
                self.emit(self.error(tag, E.ENOVERSION if hot else E.EBADTYPE))
                return
            if not self.msize and mtype != _TVERSION:
                self.emit(self.error(tag, E.ENOVERSION))
                return
            counter = self.counters[mtype]
        inflight = self.inflight
        if inflight:
            if tag in inflight:
                self.emit(self.error(tag, E.ETAGINUSE))
                return
            if len(inflight) >= self.max_tags and mtype not in _ALWAYS:
                self.emit(self.error(tag, E.ETOOMANYTAGS))
                return
        self._backend = None
        # Every request is counted; one in TIME_EVERY is timed (its latency stands for the
        # others in the mean), which keeps two clock reads off most requests.
        counter[0] += 1
        timed = counter[0] % TIME_EVERY == 1
        t0 = time.perf_counter_ns() if timed else 0
        try:
            if msg is None:
                reply = handler(self, tag, *unpack(frame))
            else:
                reply = handler(self, msg)
        except ProtocolError as e:      # a malformed hot request
            reply = self.error(tag, self.fit(str(e)))
        except Exception as e:
            reply = self.error(tag, self.ename(e))
        cls = reply.__class__
        if cls is bytes:                # a hot request's reply frame
            if timed:
                counter[1] += (time.perf_counter_ns() - t0) * 1e-9
                counter[2] += 1
            if len(reply) <= self.msize:
                self.out.append(reply)
                self.out_bytes += len(reply)
            else:
                self.emit(self.error(tag, self.fit(E.ETOOBIG)))
        elif cls is list:               # a large read's frame: its header, then its payload
            if timed:
                counter[1] += (time.perf_counter_ns() - t0) * 1e-9
                counter[2] += 1
            self.queue_parts(tag, reply)
        elif isinstance(reply, Message):
            if timed:
                counter[1] += (time.perf_counter_ns() - t0) * 1e-9
                counter[2] += 1
            self.emit(reply)
        else:
            work = Work(tag, reply, self._backend, counter, t0, len(frame))
            inflight[tag] = work
            self.pending_bytes += work.size
            self.started.append(work)

    def complete(self, work, result):
        """The outcome of a Work: its reply, or the exception its coroutine raised.  The
        reply is sent unless the request was flushed or the session started over."""
        if self.inflight.get(work.tag) is not work:
            return
        del self.inflight[work.tag]
        self.pending_bytes -= work.size
        if work.t0:
            work.counter[1] += (time.perf_counter_ns() - work.t0) * 1e-9
            work.counter[2] += 1
        if result.__class__ is bytes:
            if len(result) <= self.msize:
                self.out.append(result)
                self.out_bytes += len(result)
                return
            result = self.error(work.tag, self.fit(E.ETOOBIG))
        elif result.__class__ is list:
            self.queue_parts(work.tag, result)
            return
        elif not isinstance(result, Message):
            result = self.error(work.tag, self.ename(result))
        self.emit(result)

    def backend(self, aw):
        """Note the backend's awaitable a handler wraps, so a flush can close it unstarted."""
        self._backend = aw
        return aw

    # -- replies out ----------------------------------------------------------------------

    def queue_parts(self, tag, parts):
        """Queue a frame given as its parts (a large read's header and payload pieces)."""
        n = sum(map(len, parts))
        if n > self.msize:
            self.emit(self.error(tag, self.fit(E.ETOOBIG)))
            return
        self.out.extend(parts)
        self.out_bytes += n
        self.out_big = True

    def emit(self, reply):
        """Encode reply into out; one that cannot be encoded, or does not fit in msize,
        becomes an Rerror.  This and the checks of a hot reply's frame where receive,
        complete and queue_parts queue it are where every reply is checked."""
        try:
            frame = reply._encode()
        except Exception as e:
            frame = encode(self.error(reply.tag, self.ename(e)))
        if len(frame) > self.msize and self.msize:
            frame = encode(self.error(reply.tag, self.fit(E.ETOOBIG)))
        self.out.append(frame)
        self.out_bytes += len(frame)

    def ename(self, e):
        """The Rerror string for exception e; an exception without ename is logged."""
        ename = getattr(e, 'ename', None)
        if ename.__class__ is str:
            if self.log is not None and e.args and e.args[0] != ename:
                # The client gets the short form (EIO for a corrupt block): log the detail.
                self.log.warning('%s: %s', self.peer.addr, e)
            return self.fit(ename)
        if self.log is not None:
            self.log.error('%s: internal error', self.peer.addr, exc_info=e)
        return self.fit(E.EINTERNAL + (str(e) or e.__class__.__name__))

    def fit(self, ename):
        # An Rerror larger than msize would be refused by the client.
        room = (self.msize or self.max_msize) - 9
        if len(ename) * 4 > room:
            b = ename.encode('utf-8')
            if len(b) > room:
                ename = b[:room].decode('utf-8', 'ignore')
        return ename

    # -- session life ---------------------------------------------------------------------

    def abort(self):
        """Cancel requests in flight and clunk every fid (Tversion, hang-up).  Idempotent."""
        for work in self.inflight.values():
            work.stop()
        self.inflight.clear()
        self.pending_bytes = 0
        fids = list(self.fids.values())
        self.fids.clear()
        self.xattrs.clear()
        for fid in fids:
            self.release(fid.file)

    def release(self, file):
        """Clunk a file whose fid is gone, with no one to answer: errors are only logged."""
        try:
            r = self.fs.clunk(file)
        except Exception:
            if self.log is not None:
                self.log.exception('clunk failed')
            return
        if r is not None and isawaitable(r):
            self.background.append(r)

    # -- fids ---------------------------------------------------------------------------

    def openfid(self, fid):
        """The fid, which must be known and open (read and write)."""
        f = self.fids.get(fid)
        if f is None:
            raise Error(E.EUNKNOWNFID)
        if f.mode < 0:
            raise Error(E.ENOTOPEN)
        return f

    def getfid(self, fid):
        f = self.fids.get(fid)
        if f is None:
            raise Error(E.EUNKNOWNFID)
        return f

    def newfid(self, fid):
        if fid in self.fids:
            raise Error(E.EFIDINUSE)
        if fid == NOFID:
            raise Error(E.EUNKNOWNFID)
        if len(self.fids) >= self.max_fids:
            raise Error(E.ETOOMANYFIDS)

    def popfid(self, fid):
        f = self.fids.pop(fid, None)
        if f is None:
            raise Error(E.EUNKNOWNFID)
        return f

    # -- requests: each returns a reply, or a coroutine that returns one ----------------

    def version(self, m):
        self.abort()
        self.msize = self.peer.msize = 0
        self.framer.msize = PRE_VERSION_FRAME
        self.peer.uname = None
        self.dialect(VERSION)
        if m.msize < MIN_MSIZE:
            return Rerror(m.tag, E.EMSIZE)
        msize = min(m.msize, self.max_msize)
        v = m.version
        if v != VERSION and not v.startswith(VERSION + '.'):
            return Rversion(m.tag, msize, 'unknown')
        self.msize = self.peer.msize = self.framer.msize = msize
        self.iounit = msize - IOHDRSZ
        self.dialect(VERSION_L if v == VERSION_L else VERSION)
        return Rversion(m.tag, msize, self.version_name)

    def auth(self, m):
        self.newfid(m.afid)
        file = self.fs.auth(self.peer, m.uname, m.aname)
        # An auth fid is read and written without Topen.
        self.fids[m.afid] = _Fid(file, codec.ORDWR)
        return Rauth(m.tag, file.qid)

    def attach(self, m):
        self.newfid(m.fid)
        afile = None if m.afid == NOFID else self.getfid(m.afid).file
        n_uname = getattr(m, 'n_uname', NONUNAME)
        if n_uname != NONUNAME:         # 9P2000.L: the numeric user counts, not the name
            file = self.fs.attach(self.peer, m.uname, m.aname, afile, n_uname=n_uname)
        elif afile is None:
            file = self.fs.attach(self.peer, m.uname, m.aname)
        else:
            file = self.fs.attach(self.peer, m.uname, m.aname, afile)
        self.fids[m.fid] = _Fid(file)
        self.peer.uname = m.uname
        return Rattach(m.tag, file.qid)

    def flush(self, m):
        work = self.inflight.pop(m.oldtag, None)
        if work is not None:
            self.pending_bytes -= work.size
            work.stop()
        return Rflush(m.tag)

    def walk(self, tag, fid, newfid, names):
        fid_ = fid
        fid = self.fids.get(fid)
        if fid is None:
            raise Error(E.EUNKNOWNFID)
        inplace = newfid == fid_
        # walk(5): the fid must not have been opened.  Except for a clone to another fid:
        # Linux (6.1) clones the open fid of an unlinked file to open it again (an open of
        # /proc/PID/fd/N), and the clone is not open.
        if fid.mode >= 0 and (names or inplace):
            raise Error(E.EWALKOPEN)
        if not inplace:
            self.newfid(newfid)
        for name in names:
            _check_name(name, True)
        if not names:
            if not inplace:
                self.fids[newfid] = _Fid(self.fs.clone(fid.file))
            return Rwalk.pack(tag, ())
        walk1 = self.fs.walk1
        start = file = fid.file
        qids = []
        for name in names:
            try:
                nxt = walk1(file, name)
            except Exception as e:
                if file is not start:   # the files walked through are not kept: let them go
                    self.release(file)
                if not qids:
                    raise
                self.ename(e)           # a partial walk does not send the error: log a bug
                return Rwalk.pack(tag, qids)
            if file is not start:
                self.release(file)
            file = nxt
            qids.append(file.qid)
        if inplace:
            fid.file = file
        else:
            self.fids[newfid] = _Fid(file)
        return Rwalk.pack(tag, qids)

    def opened(self, fid, mode):
        fid.mode = mode
        fid.isdir = fid.file.isdir
        fid.dir_offset = 0
        fid.dir_cursor = fid.dir_pending = None

    def open(self, tag, fid, mode):
        return self._open(tag, fid, mode, Ropen)

    def _open(self, tag, fid, mode, reply):
        """Topen and Tlopen (whose flags are turned into mode first)."""
        fid = self.getfid(fid)
        if fid.mode >= 0:
            raise Error(E.EOPEN)
        r = self.fs.open(fid.file, mode)
        if r is not None and isawaitable(r):    # the tree may first finish a freeze (OTRUNC)
            return self.open_later(fid, mode, self.backend(r), reply, tag)
        self.opened(fid, mode)
        return reply.pack(tag, fid.file.qid, self.iounit)

    async def open_later(self, fid, mode, aw, reply, tag):
        await aw
        self.opened(fid, mode)
        return reply.pack(tag, fid.file.qid, self.iounit)

    def create(self, tag, fid, name, perm, mode):
        return self._create(tag, fid, name, perm, mode, Rcreate)

    def _create(self, tag, fid, name, perm, mode, reply):
        """Tcreate and Tlcreate (whose flags are turned into mode first)."""
        fid = self.getfid(fid)
        if fid.mode >= 0:
            raise Error(E.EOPEN)
        _check_name(name, False)
        r = self.fs.create(fid.file, name, perm, mode)
        if r is not None and isawaitable(r):    # the tree may first make room on its disk
            return self.open_later(fid, mode, self.backend(r), reply, tag)
        self.opened(fid, mode)
        return reply.pack(tag, fid.file.qid, self.iounit)

    def read(self, tag, fid_, offset, count):
        fid = self.openfid(fid_)
        if fid.mode & 3 == OWRITE:
            raise Error(E.ENOTREAD)
        if count > self.iounit:
            count = self.iounit
        if fid.isdir:
            return Rread.pack(tag, self.dirread(fid, offset, count))
        if self.xattrs and fid_ in self.xattrs:
            return Rread.pack(tag, self.xattrs[fid_][offset:offset + count])
        data = self.fs.read(fid.file, offset, count)
        cls = data.__class__
        if cls is bytes or cls is bytearray or cls is memoryview or cls is list:
            return self.rread(tag, data, count)
        return self.read_later(tag, self.backend(data), count)

    async def read_later(self, tag, aw, count):
        return self.rread(tag, await aw, count)

    @staticmethod
    def rread(tag, data, count):
        """The reply to a read of count bytes that got data (bytes-like, or a list of
        pieces): a frame, or for a large payload the frame's parts, header first, which the
        owner writes without copying the payload."""
        if data.__class__ is list:
            n = 0
            for i, piece in enumerate(data):
                n += len(piece)
                if n >= count:          # (a backend that gave more than was asked)
                    data = data[:i + 1]
                    if n > count:
                        data[i] = memoryview(piece).cast('B')[:len(piece) - (n - count)]
                        n = count
                    break
            return [Rread.head(tag, n), *data]
        if data.__class__ is memoryview and data.itemsize != 1:
            data = data.cast('B')
        if len(data) > count:
            data = data[:count]
        if len(data) >= BIG_PAYLOAD:
            return [Rread.head(tag, len(data)), data]
        return Rread.pack(tag, data)

    def dirread(self, fid, offset, count):
        if offset == 0:
            fid.dir_offset = 0
            fid.dir_cursor = fid.dir_pending = None
        elif offset != fid.dir_offset:
            raise Error(E.EBADOFFSET)
        if count == 0:
            return b''
        parts = []
        n = 0
        cursor = fid.dir_cursor
        pending = fid.dir_pending
        if pending is not None:
            if len(pending) > count:
                raise Error(E.ESHORT)
            parts.append(pending)
            n = len(pending)
            pending = None
        # The state on the fid changes only once the read has succeeded: an error from
        # the backend loses no entry.
        for st, nxt in self.fs.dirents(fid.file, cursor):
            entry = pack_stat(st)
            cursor = nxt
            if n + len(entry) > count:
                pending = entry
                break
            parts.append(entry)
            n += len(entry)
        fid.dir_cursor = cursor
        fid.dir_pending = pending
        if n == 0 and pending is not None:
            raise Error(E.ESHORT)
        fid.dir_offset = offset + n
        return b''.join(parts)

    def write(self, tag, fid, offset, data):
        fid = self.openfid(fid)
        mode = fid.mode
        if mode & 3 == OREAD or mode & 3 == OEXEC:
            raise Error(E.ENOTWRITE)
        n = self.fs.write(fid.file, offset, data)
        if n.__class__ is int:
            return Rwrite.pack(tag, n)
        return self.write_later(tag, self.backend(n))

    async def write_later(self, tag, aw):
        return Rwrite.pack(tag, await aw)

    def clunk(self, tag, fid_):
        fid = self.fids.pop(fid_, None)
        if fid is None:
            raise Error(E.EUNKNOWNFID)
        if self.xattrs:
            self.xattrs.pop(fid_, None)
        r = self.fs.clunk(fid.file)
        if r is not None and isawaitable(r):
            return self.then(self.backend(r), Rclunk.pack(tag))
        return Rclunk.pack(tag)

    async def then(self, aw, reply):
        await aw
        return reply

    def remove(self, tag, fid):
        file = self.popfid(fid).file
        try:
            r = self.fs.remove(file)
        except Exception:
            self.release(file)
            raise
        if r is not None and isawaitable(r):
            return self.remove_later(tag, file, self.backend(r))
        r = self.fs.clunk(file)
        if r is not None and isawaitable(r):
            return self.then(self.backend(r), Rremove.pack(tag))
        return Rremove.pack(tag)

    async def remove_later(self, tag, file, aw):
        try:
            await aw
        except Exception:
            self.release(file)
            raise
        r = self.fs.clunk(file)
        if r is not None and isawaitable(r):
            await r
        return Rremove.pack(tag)

    def stat(self, tag, fid):
        fid = self.fids.get(fid)
        if fid is None:
            raise Error(E.EUNKNOWNFID)
        return Rstat.pack(tag, self.fs.stat(fid.file))

    def wstat(self, m):
        r = self.fs.wstat(self.getfid(m.fid).file, m.stat)
        if r is not None and isawaitable(r):
            return self.then(self.backend(r), Rwstat(m.tag))
        return Rwstat(m.tag)

    # -- 9P2000.L: the requests Linux sends beyond the shared ones ----------------------
    #
    # POSIX on the wire, Plan 9 in the tree: open flags become 9P2000 open modes, file types
    # and numeric ids are derived from the tree's modes and names.  The backend's
    # 9P2000.L operations are documented in creepy/fs/fs.py.

    def refused(self, m):
        """Tlink, Tmknod: the tree holds no hard links and no device files."""
        raise Error(E.ENOTPERMITTED)

    def unsupported(self, m):
        """Txattrcreate: the tree keeps no extended attributes."""
        raise Error(E.ENOTSUP)

    def lopen(self, tag, fid, flags):
        return self._open(tag, fid, _omode(flags), codec.Rlopen)

    def lcreate(self, tag, fid, name, flags, mode, gid):
        return self._create(tag, fid, name, mode & 0o777, _omode(flags), codec.Rlcreate)

    def getattr(self, tag, fid, request_mask):
        fid = self.fids.get(fid)
        if fid is None:
            raise Error(E.EUNKNOWNFID)
        a = self.fs.getattr(fid.file)
        mode = a.mode
        kind = S_IFDIR if mode & codec.DMDIR else (S_IFLNK if mode & DMSYMLINK else S_IFREG)
        number = self.fs.user_number
        asec, ans = divmod(a.atime, 1_000_000_000)
        msec, mns = divmod(a.mtime, 1_000_000_000)
        return codec.Rgetattr.pack(tag, GETATTR_BASIC, a.qid, kind | (mode & 0o777),
                                   number(a.uid), number(a.gid), 1, 0, a.length, self.iounit,
                                   (a.length + 511) // 512, asec, ans, msec, mns, msec, mns,
                                   0, 0, 0, 0)

    def setattr(self, m):
        fid = self.getfid(m.fid)
        valid = m.valid
        uid = gid = None
        if valid & SETATTR_UID:
            uid = self._user(m.uid)
        if valid & SETATTR_GID:
            gid = self._user(m.gid)
        now = time.time_ns()
        atime = mtime = None
        touch = False
        if valid & SETATTR_ATIME:
            if valid & SETATTR_ATIME_SET:
                atime = m.atime_sec * 1_000_000_000 + m.atime_nsec
            else:
                atime, touch = now, True
        if valid & SETATTR_MTIME:
            if valid & SETATTR_MTIME_SET:
                mtime = m.mtime_sec * 1_000_000_000 + m.mtime_nsec
            else:
                mtime, touch = now, True
        r = self.fs.setattr(fid.file, mode=m.mode if valid & SETATTR_MODE else None, uid=uid,
                            gid=gid, length=m.size if valid & SETATTR_SIZE else None,
                            atime=atime, mtime=mtime, touch=touch)
        if r is not None and isawaitable(r):    # the tree may first finish a freeze
            return self.then(self.backend(r), codec.Rsetattr(m.tag))
        return codec.Rsetattr(m.tag)

    def _user(self, number):
        name = self.fs.user_name(number)
        if name is None:
            raise Error(E.EBADUSER)
        return name

    def readdir(self, tag, fid, offset, count):
        """Entries from offset: 0 is the start; any other offset one this fid handed out
        (each entry's offset is where the next one starts).  Entries are never split; "."
        and ".." come first."""
        fid = self.openfid(fid)
        if not fid.isdir:
            raise Error(E.ENOTDIR)
        if count > self.iounit:
            count = self.iounit
        marks = fid.marks
        if offset == 0:
            marks = fid.marks = {}
            cursor = None
        elif marks is None or offset not in marks:
            raise Error(E.EBADOFFSET)
        else:
            cursor = marks[offset]
        parts = []
        n = 0
        pos = offset
        file = fid.file
        if pos < 2:
            dots = [(file.qid, '.'), (self._parent_qid(file), '..')]
            for q, name in dots[pos:]:
                entry = pack_dirent(q, pos + 1, DT_DIR, name)
                if n + len(entry) > count:
                    break
                parts.append(entry)
                n += len(entry)
                pos += 1
                marks[pos] = None
        if pos >= 2:
            for st, nxt in self.fs.dirents(file, cursor):
                mode = st.mode
                entry = pack_dirent(st.qid, pos + 1,
                                    DT_DIR if mode & codec.DMDIR else
                                    DT_LNK if mode & DMSYMLINK else DT_REG, st.name)
                if n + len(entry) > count:
                    break
                parts.append(entry)
                n += len(entry)
                pos += 1
                marks[pos] = nxt
        if n == 0 and pos == offset and count < 64:
            raise Error(E.ESHORT)
        if len(marks) > MAXMARKS:
            for k in list(marks)[:len(marks) - MAXMARKS]:
                del marks[k]
        return codec.Rreaddir.pack(tag, b''.join(parts))

    def _parent_qid(self, file):
        try:
            up = self.fs.walk1(file, '..')
        except Exception:
            return file.qid
        q = up.qid
        self.release(up)
        return q

    def rename(self, m):
        r = self.fs.rename(self.getfid(m.fid).file, self.getfid(m.dfid).file, m.name)
        if r is not None and isawaitable(r):
            return self.then(self.backend(r), codec.Rrename(m.tag))
        return codec.Rrename(m.tag)

    def renameat(self, m):
        old = self.getfid(m.olddirfid).file
        new = self.getfid(m.newdirfid).file
        _check_name(m.oldname, False)
        _check_name(m.newname, False)
        f = self.fs.child(old, m.oldname)
        try:
            r = self.fs.rename(f, new, m.newname)
        except BaseException:
            self.release(f)
            raise
        if r is not None and isawaitable(r):
            return self.renameat_later(self.backend(r), f, m.tag)
        self.release(f)
        return codec.Rrenameat(m.tag)

    async def renameat_later(self, aw, f, tag):
        try:
            await aw
        finally:
            self.release(f)
        return codec.Rrenameat(tag)

    def unlinkat(self, m):
        _check_name(m.name, False)
        r = self.fs.unlink(self.getfid(m.dirfid).file, m.name, bool(m.flags & AT_REMOVEDIR))
        if r is not None and isawaitable(r):
            return self.then(self.backend(r), codec.Runlinkat(m.tag))
        return codec.Runlinkat(m.tag)

    def symlink(self, m):
        _check_name(m.name, False)
        r = self.fs.symlink(self.getfid(m.fid).file, m.name, m.symtgt)
        if isawaitable(r):
            return self.qid_later(self.backend(r), codec.Rsymlink, m.tag)
        return codec.Rsymlink(m.tag, r)

    def mkdir(self, m):
        _check_name(m.name, False)
        r = self.fs.mkdir(self.getfid(m.dfid).file, m.name, m.mode)
        if isawaitable(r):
            return self.qid_later(self.backend(r), codec.Rmkdir, m.tag)
        return codec.Rmkdir(m.tag, r)

    async def qid_later(self, aw, cls, tag):
        return cls(tag, await aw)

    def readlink(self, m):
        return codec.Rreadlink(m.tag, self.fs.readlink(self.getfid(m.fid).file))

    def statfs(self, m):
        bsize, blocks, bfree, bavail, namelen = self.fs.statfs(self.getfid(m.fid).file)
        return codec.Rstatfs(m.tag, V9FS_MAGIC, bsize, blocks, bfree, bavail, 0, 0, 0,
                             namelen)

    def fsync(self, m):
        r = self.fs.fsync(self.getfid(m.fid).file)
        if r is not None and isawaitable(r):
            return self.then(self.backend(r), codec.Rfsync(m.tag))
        return codec.Rfsync(m.tag)

    def lock(self, m):
        status = self.fs.lock(self.getfid(m.fid).file, m.ltype, m.start, m.length,
                              m.proc_id, m.client_id)
        return codec.Rlock(m.tag, status)

    def getlock(self, m):
        return codec.Rgetlock(m.tag, *self.fs.getlock(self.getfid(m.fid).file, m.ltype,
                                                      m.start, m.length, m.proc_id,
                                                      m.client_id))

    def xattrwalk(self, m):
        """The list of a file's extended attributes is empty; any one of them is absent."""
        fid = self.getfid(m.fid)
        if m.name:
            raise Error(E.ENODATA)
        if m.newfid != m.fid:
            self.newfid(m.newfid)
            new = _Fid(self.fs.clone(fid.file), OREAD)
            self.fids[m.newfid] = new
        else:
            fid.mode = OREAD
        self.xattrs[m.newfid] = b''
        return codec.Rxattrwalk(m.tag, 0)


def _omode(flags):
    """The 9P2000 open mode for Linux open flags (O_RDONLY, O_WRONLY, O_RDWR, O_TRUNC)."""
    acc = flags & O_ACCMODE
    return (ORDWR if acc == 3 else acc) | (OTRUNC if flags & O_TRUNC else 0)


# A dialect is two tables: its hot requests, each (unpack, handler): the handler takes the
# tag and the fields unpack reads from the frame and returns the reply frame; and its other
# requests, whose handlers take the decoded message (codec.Dialect decodes it) and return a
# reply message.  Either may instead return a coroutine that returns the reply (Work).
# Both dialects share the handlers of the messages they share.
def _hot(*classes_and_handlers):
    return {cls.type: (cls.unpack, handler) for cls, handler in classes_and_handlers}


_SHARED_HOT = ((codec.Twalk, Session.walk), (codec.Tread, Session.read),
               (codec.Twrite, Session.write), (codec.Tclunk, Session.clunk),
               (codec.Tremove, Session.remove))
HOT = {
    VERSION: _hot(*_SHARED_HOT, (codec.Topen, Session.open), (codec.Tcreate, Session.create),
                  (codec.Tstat, Session.stat)),
    VERSION_L: _hot(*_SHARED_HOT, (codec.Tlopen, Session.lopen),
                    (codec.Tlcreate, Session.lcreate), (codec.Tgetattr, Session.getattr),
                    (codec.Treaddir, Session.readdir)),
}
_SHARED = {
    codec.Tversion.type: Session.version, codec.Tflush.type: Session.flush,
    codec.Tauth.type: Session.auth, codec.Tattach.type: Session.attach,
}
TABLES = {
    VERSION: (codec.NINEP2000, {
        **_SHARED,
        codec.Twstat.type: Session.wstat,
    }, Session._rerror),
    VERSION_L: (codec.NINEP2000L, {
        **_SHARED,
        codec.Tstatfs.type: Session.statfs, codec.Tsymlink.type: Session.symlink,
        codec.Tmknod.type: Session.refused, codec.Trename.type: Session.rename,
        codec.Treadlink.type: Session.readlink, codec.Tsetattr.type: Session.setattr,
        codec.Txattrwalk.type: Session.xattrwalk,
        codec.Txattrcreate.type: Session.unsupported, codec.Tfsync.type: Session.fsync,
        codec.Tlock.type: Session.lock, codec.Tgetlock.type: Session.getlock,
        codec.Tlink.type: Session.refused, codec.Tmkdir.type: Session.mkdir,
        codec.Trenameat.type: Session.renameat, codec.Tunlinkat.type: Session.unlinkat,
    }, Session._rlerror),
}
