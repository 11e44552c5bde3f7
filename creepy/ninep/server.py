"""9P2000 service: serves a file-system backend to clients over TCP and Unix sockets.

This module owns connections, fids and tags, and the protocol rules that do not depend on
what a file is: version negotiation, walk loops, directory-read offsets, flush, limits.  It
must never know about disks, blocks or the tree's internals: everything about files goes
through the backend contract below, and every file is an opaque object to it.

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
    create(file, name, perm, mode)     then file is the new file, open with mode
    read(file, offset, count) -> bytes       [*]  never called for directories
    dirents(file, cursor) -> iterable of (stat, next_cursor)
                                       entries of a directory from cursor (None: the start)
    write(file, offset, data) -> int         [*]
    clunk(file)                              [*]  the fid is gone, whatever happens
    remove(file)                             [*]  then clunk(file) follows, success or not
    stat(file) -> stat                 any object with codec.Stat's attributes
    wstat(file, stat)                        [*]  stat is a decoded codec.Stat

[*] may return an awaitable instead of the value: the request then runs as a task while
the connection keeps serving others, and its reply goes out when it completes.  Every other
call must return its value.  File objects from walk1 and clone that never get bound to a fid
(intermediate walk steps, failed walks) are simply dropped; clunk is called exactly once for
each file that was bound to a fid: on Tclunk, after Tremove, on Tversion, on disconnect.

Protocol rules kept here
------------------------
- Before Tversion only Tversion is served.  A version of "9P2000" or "9P2000.<anything>" is
  answered "9P2000"; anything else "unknown".  msize = min(client's, ours) and at least 256.
  Tversion aborts the session: in-flight requests are cancelled unanswered, fids are clunked.
- Many requests in flight per connection; replies go out in completion order.  Tflush
  cancels the flushed request's task and answers Rflush at once: after Rflush nothing is ever
  sent for the old tag.  A request that already answered is not affected.
- Walk: up to 16 names; newfid may equal fid; an open fid may be walked to another newfid
  (Linux v9fs does) but not in place; 0 names clone; failure at the first name is an error,
  a later failure answers the qids walked so far and leaves newfid unset.
- Directory reads: offset 0 restarts; any other offset must be where the previous read on
  that fid ended ("bad offset in directory read"); whole stat entries only.  If the next
  entry alone does not fit in count the read fails with "i/o count too small" (Plan 9's
  devdirread does the same) and the entry is kept, so a retry with a larger count works.
- Tread count is clamped to msize - 24 (IOHDRSZ); iounit is always msize - 24.
- Limits per connection: fids (max_fids), requests in flight (max_tags).
- A frame whose size field is < 7 or > msize closes the connection; any other malformed
  frame is answered Rerror on its tag.
"""

import asyncio
import errno
import logging
import os
import socket
import stat as statmod
import struct
import time
from inspect import CORO_CREATED, getcoroutinestate, isawaitable

from creepy import errors as E

from . import codec
from .codec import (
    IOHDRSZ, NOFID, OEXEC, OREAD, OWRITE, Framer, Message, ProtocolError,
    Rattach, Rauth, Rclunk, Rcreate, Rerror, Rflush, Ropen, Rread, Rremove, Rstat, Rversion,
    Rwalk, Rwrite, Rwstat, encode, encode_parts, pack_stat,
)

__all__ = ['Server', 'Peer', 'DEFAULT_MSIZE', 'MIN_MSIZE']

DEFAULT_MSIZE = (1 << 20) + IOHDRSZ     # a 1 MiB payload per Tread/Twrite
MIN_MSIZE = 256
MAXNAME = 255                           # bytes in a file name
VERSION = '9P2000'

# Error strings of the service layer.  Plan 9's wording where Plan 9 has one.

# Replies whose payload is worth writing without copying it into one frame.
_BIG_PAYLOAD = 1 << 16

_PEERCRED = struct.Struct('3i')


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

    __slots__ = ('file', 'mode', 'isdir', 'dir_offset', 'dir_cursor', 'dir_pending')

    def __init__(self, file, mode=-1):
        self.file = file
        self.mode = mode
        self.isdir = False
        self.dir_offset = 0         # where the last directory read ended
        self.dir_cursor = None      # backend cursor of the entry after dir_pending
        self.dir_pending = None     # a packed entry that did not fit in the last read


def _check_name(name, dotdot_ok):
    """Raise Error unless name may be a walk (dotdot_ok) or create name."""
    if '/' in name or '\0' in name:
        raise Error(E.EBADNAME)
    if name == '' or name == '.' or (name == '..' and not dotdot_ok):
        raise Error(E.EILLEGALNAME)
    # A char is at most 4 bytes of UTF-8: short names need no encoding to be measured.
    if len(name) > MAXNAME // 4 and len(name.encode('utf-8')) > MAXNAME:
        raise Error(E.ENAMETOOLONG)


def _stop(task, awaiting):
    """Cancel a request's task, whose tag is already forgotten so it will not answer.

    A task that has not started yet never will: it is cancelled before its first step, and
    the coroutines it was given (the handler's wrapper and the backend's awaitable inside it)
    are closed unstarted, so a flushed request that arrived in the same buffer as its Tflush
    has no effect at all (flush(5): a request with no reply before the Rflush is as though it
    had never been sent).
    """
    if getcoroutinestate(task.get_coro()) == CORO_CREATED and awaiting:
        for aw in awaiting:
            if hasattr(aw, "close"):
                aw.close()
    task.cancel()


_decode = codec.decode
_TVERSION = codec.Tversion.type

# One request in TIME_EVERY of each type is timed for the mean latency in /stats.
TIME_EVERY = 8

# Requests answered even when max_tags requests are in flight: they are how a client at the
# limit makes room (Tflush) or starts over (Tversion).
_ALWAYS = frozenset((codec.Tflush.type, codec.Tversion.type))


class _Connection(asyncio.BufferedProtocol):
    """One client: frames in, replies out, its fids and in-flight requests."""

    def __init__(self, server, kind, path):
        self.server = server
        self.fs = server.fs
        self.kind = kind
        self.path = path
        self.transport = None
        self.peer = None
        self.framer = Framer(server.msize)
        self.msize = 0
        self.iounit = 0
        self.fids = {}
        self.inflight = {}          # tag -> task of a request answered asynchronously
        self.awaiting = {}          # tag -> (the task's coroutine, the backend's awaitable in it)
        self._backend = None
        self.out = []               # replies gathered while handling one buffer of frames
        self.counters = server._counters
        self.batching = False
        self.closing = False
        self.shut = False
        self.handlers = {
            codec.Tversion.type: self.version, codec.Tauth.type: self.auth,
            codec.Tattach.type: self.attach, codec.Tflush.type: self.flush,
            codec.Twalk.type: self.walk, codec.Topen.type: self.open,
            codec.Tcreate.type: self.create, codec.Tread.type: self.read,
            codec.Twrite.type: self.write, codec.Tclunk.type: self.clunk,
            codec.Tremove.type: self.remove, codec.Tstat.type: self.stat,
            codec.Twstat.type: self.wstat,
        }

    # -- connection life ---------------------------------------------------------------

    def connection_made(self, transport):
        self.transport = transport
        if self.kind == 'unix':
            cred = None
            sock = transport.get_extra_info('socket')
            if sock is not None and hasattr(socket, 'SO_PEERCRED'):
                try:
                    cred = _PEERCRED.unpack(sock.getsockopt(
                        socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size))
                except OSError:
                    cred = None
            addr = 'unix!' + self.path
        else:
            cred = None
            name = transport.get_extra_info('peername')
            addr = 'tcp!%s!%d' % (name[0], name[1]) if name else 'tcp!?'
        self.peer = Peer(addr, cred, self.kind)
        try:
            self.fs.connect(self.peer)
        except Exception as e:
            self.server.log.warning('%s: refused by the file system: %s', addr, e)
            self.shut = True
            transport.abort()
            return
        self.server._conns.add(self)
        self.server.peers.add(self.peer)

    def connection_lost(self, exc):
        self.shutdown()

    def shutdown(self):
        """Cancel in-flight requests, clunk every fid, tell the backend.  Idempotent."""
        if self.shut:
            return
        self.shut = True
        self.closing = True
        self.abort_session()
        try:
            self.fs.disconnect(self.peer)
        except Exception:
            self.server.log.exception('%s: disconnect failed', self.peer.addr)
        self.server._conns.discard(self)
        self.server.peers.discard(self.peer)

    def abort_session(self):
        for tag, task in self.inflight.items():
            _stop(task, self.awaiting.get(tag))
        self.inflight.clear()
        self.awaiting.clear()
        fids = list(self.fids.values())
        self.fids.clear()
        for fid in fids:
            self.server._release(fid.file)

    def pause_writing(self):
        # The client is not reading its replies: stop reading its requests.
        self.transport.pause_reading()

    def resume_writing(self):
        if not self.closing:
            self.transport.resume_reading()

    def fatal(self, why):
        self.server.log.warning('%s: closing: %s', self.peer.addr, why)
        self.closing = True
        self.transport.close()

    # -- frames in, replies out ---------------------------------------------------------

    def get_buffer(self, sizehint):
        return self.framer.get_buffer(sizehint)

    def buffer_updated(self, nbytes):
        self.framer.buffer_updated(nbytes)
        if self.closing:
            return
        self.batching = True
        try:
            for frame in self.framer.frames():
                self.request(frame)
                if self.closing:
                    break
        except ProtocolError as e:      # the framer lost the frame boundary
            self.fatal(str(e))
        except Exception as e:          # a bug here: lose this connection, not the server
            self.server.log.exception('%s: request handling failed', self.peer.addr)
            self.fatal(repr(e))
        finally:
            self.batching = False
            out = self.out
            if out:
                self.transport.write(out[0] if len(out) == 1 else b''.join(out))
                out.clear()

    def request(self, frame):
        try:
            msg = _decode(frame)
        except ProtocolError as e:
            if e.fatal or e.tag is None:
                self.fatal(str(e))
            else:
                self.send(Rerror(e.tag, self.fit(str(e))))
            return
        tag = msg.tag
        mtype = msg.type
        handler = self.handlers.get(mtype)
        if handler is None:
            self.send(Rerror(tag, E.EBADTYPE))
            return
        if not self.msize and mtype != _TVERSION:
            self.send(Rerror(tag, E.ENOVERSION))
            return
        inflight = self.inflight
        if inflight:
            if tag in inflight:
                self.send(Rerror(tag, E.ETAGINUSE))
                return
            if len(inflight) >= self.server.max_tags and mtype not in _ALWAYS:
                self.send(Rerror(tag, E.ETOOMANYTAGS))
                return
        counter = self.counters[mtype]
        self._backend = None
        # Every request is counted; one in TIME_EVERY is timed (its latency stands for the
        # others in the mean), which keeps two clock reads off most requests.
        counter[0] += 1
        timed = counter[0] % TIME_EVERY == 1
        t0 = time.perf_counter_ns() if timed else 0
        try:
            reply = handler(msg)
        except Exception as e:
            reply = Rerror(tag, self.ename(e))
        if isinstance(reply, Message):
            if timed:
                counter[1] += (time.perf_counter_ns() - t0) * 1e-9
                counter[2] += 1
            if self.batching and reply.__class__ is not Rread:
                try:                    # the common case, without send()'s detours
                    self.out.append(reply._encode())
                    return
                except Exception:
                    pass
            self.send(reply)
        else:
            task = asyncio.get_running_loop().create_task(self.finish(tag, reply, counter, t0))
            inflight[tag] = task
            self.awaiting[tag] = (reply, self._backend)

    async def finish(self, tag, coro, counter, t0):
        """Await a request's coroutine and send its reply unless it was flushed."""
        try:
            reply = await coro
        except asyncio.CancelledError:
            return
        except Exception as e:
            reply = Rerror(tag, self.ename(e))
        if t0:
            counter[1] += (time.perf_counter_ns() - t0) * 1e-9
            counter[2] += 1
        if self.inflight.get(tag) is asyncio.current_task():
            del self.inflight[tag]
            self.awaiting.pop(tag, None)
            self.send(reply)

    def backend(self, aw):
        """Note the backend's awaitable a handler wraps, so a flush can close it unstarted."""
        self._backend = aw
        return aw

    def send(self, reply):
        if self.closing:
            return
        try:
            if reply.__class__ is Rread and len(reply.data) >= _BIG_PAYLOAD:
                head, data = encode_parts(reply)
                self.write_big(head, data)
                return
            frame = encode(reply)
        except Exception as e:
            frame = encode(Rerror(reply.tag, self.ename(e)))
        if self.batching:
            self.out.append(frame)
        else:
            self.transport.write(frame)

    def write_big(self, head, data):
        # Two writes instead of one joined frame: the payload is sent (or buffered) as is.
        out = self.out
        if out:
            out.append(head)
            self.transport.write(b''.join(out))
            out.clear()
        else:
            self.transport.write(head)
        self.transport.write(data)

    def ename(self, e):
        """The Rerror string for exception e; an exception without ename is logged."""
        ename = getattr(e, 'ename', None)
        if ename.__class__ is str:
            return self.fit(ename)
        self.server.log.error('%s: internal error', self.peer.addr, exc_info=e)
        return self.fit(E.EINTERNAL + (str(e) or e.__class__.__name__))

    def fit(self, ename):
        # An Rerror larger than msize would be refused by the client.
        room = (self.msize or self.server.msize) - 9
        if len(ename) * 4 > room:
            b = ename.encode('utf-8')
            if len(b) > room:
                ename = b[:room].decode('utf-8', 'ignore')
        return ename

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
        if len(self.fids) >= self.server.max_fids:
            raise Error(E.ETOOMANYFIDS)

    def popfid(self, fid):
        f = self.fids.pop(fid, None)
        if f is None:
            raise Error(E.EUNKNOWNFID)
        return f

    # -- requests: each returns a reply, or a coroutine that returns one ----------------

    def version(self, m):
        self.abort_session()
        self.msize = 0
        self.peer.uname = None
        if m.msize < MIN_MSIZE:
            return Rerror(m.tag, E.EMSIZE)
        msize = min(m.msize, self.server.msize)
        v = m.version
        if v != VERSION and not v.startswith(VERSION + '.'):
            return Rversion(m.tag, msize, 'unknown')
        self.msize = self.peer.msize = self.framer.msize = msize
        self.iounit = msize - IOHDRSZ
        return Rversion(m.tag, msize, VERSION)

    def auth(self, m):
        self.newfid(m.afid)
        file = self.fs.auth(self.peer, m.uname, m.aname)
        # An auth fid is read and written without Topen.
        self.fids[m.afid] = _Fid(file, codec.ORDWR)
        return Rauth(m.tag, file.qid)

    def attach(self, m):
        self.newfid(m.fid)
        if m.afid == NOFID:
            file = self.fs.attach(self.peer, m.uname, m.aname)
        else:
            file = self.fs.attach(self.peer, m.uname, m.aname, self.getfid(m.afid).file)
        self.fids[m.fid] = _Fid(file)
        self.peer.uname = m.uname
        return Rattach(m.tag, file.qid)

    def flush(self, m):
        task = self.inflight.pop(m.oldtag, None)
        if task is not None:
            _stop(task, self.awaiting.pop(m.oldtag, None))
        return Rflush(m.tag)

    def walk(self, m):
        fid = self.fids.get(m.fid)
        if fid is None:
            raise Error(E.EUNKNOWNFID)
        inplace = m.newfid == m.fid
        if inplace:
            if fid.mode >= 0:
                raise Error(E.EWALKOPEN)
        else:
            self.newfid(m.newfid)
        names = m.wnames
        for name in names:
            _check_name(name, True)
        if not names:
            if not inplace:
                self.fids[m.newfid] = _Fid(self.fs.clone(fid.file))
            return Rwalk(m.tag, ())
        walk1 = self.fs.walk1
        start = file = fid.file
        qids = []
        for name in names:
            try:
                nxt = walk1(file, name)
            except Exception as e:
                if file is not start:   # the files walked through are not kept: let them go
                    self.server._release(file)
                if not qids:
                    raise
                self.ename(e)           # a partial walk does not send the error: log a bug
                return Rwalk(m.tag, qids)
            if file is not start:
                self.server._release(file)
            file = nxt
            qids.append(file.qid)
        if inplace:
            fid.file = file
        else:
            self.fids[m.newfid] = _Fid(file)
        return Rwalk(m.tag, qids)

    def opened(self, fid, mode):
        fid.mode = mode
        fid.isdir = fid.file.isdir
        fid.dir_offset = 0
        fid.dir_cursor = fid.dir_pending = None

    def open(self, m):
        fid = self.getfid(m.fid)
        if fid.mode >= 0:
            raise Error(E.EOPEN)
        r = self.fs.open(fid.file, m.mode)
        if r is not None and isawaitable(r):    # the tree may first finish a freeze (OTRUNC)
            return self.open_later(fid, m, self.backend(r))
        self.opened(fid, m.mode)
        return Ropen(m.tag, fid.file.qid, self.iounit)

    async def open_later(self, fid, m, aw):
        await aw
        self.opened(fid, m.mode)
        return Ropen(m.tag, fid.file.qid, self.iounit)

    def create(self, m):
        fid = self.getfid(m.fid)
        if fid.mode >= 0:
            raise Error(E.EOPEN)
        _check_name(m.name, False)
        r = self.fs.create(fid.file, m.name, m.perm, m.mode)
        if r is not None and isawaitable(r):    # the tree may first make room on its disk
            return self.create_later(fid, m, self.backend(r))
        self.opened(fid, m.mode)
        return Rcreate(m.tag, fid.file.qid, self.iounit)

    async def create_later(self, fid, m, aw):
        await aw
        self.opened(fid, m.mode)
        return Rcreate(m.tag, fid.file.qid, self.iounit)

    def read(self, m):
        fid = self.openfid(m.fid)
        if fid.mode & 3 == OWRITE:
            raise Error(E.ENOTREAD)
        count = m.count
        if count > self.iounit:
            count = self.iounit
        if fid.isdir:
            return Rread(m.tag, self.dirread(fid, m.offset, count))
        data = self.fs.read(fid.file, m.offset, count)
        cls = data.__class__
        if cls is bytes or cls is bytearray or cls is memoryview:
            return Rread(m.tag, data[:count] if len(data) > count else data)
        return self.read_later(m.tag, self.backend(data), count)

    async def read_later(self, tag, aw, count):
        data = await aw
        return Rread(tag, data[:count] if len(data) > count else data)

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

    def write(self, m):
        fid = self.openfid(m.fid)
        mode = fid.mode
        if mode & 3 == OREAD or mode & 3 == OEXEC:
            raise Error(E.ENOTWRITE)
        n = self.fs.write(fid.file, m.offset, m.data)
        if n.__class__ is int:
            return Rwrite(m.tag, n)
        return self.write_later(m.tag, self.backend(n))

    async def write_later(self, tag, aw):
        return Rwrite(tag, await aw)

    def clunk(self, m):
        fid = self.fids.pop(m.fid, None)
        if fid is None:
            raise Error(E.EUNKNOWNFID)
        r = self.fs.clunk(fid.file)
        if r is not None and isawaitable(r):
            return self.then(self.backend(r), Rclunk(m.tag))
        return Rclunk(m.tag)

    async def then(self, aw, reply):
        await aw
        return reply

    def remove(self, m):
        fid = self.popfid(m.fid)
        file = fid.file
        try:
            r = self.fs.remove(file)
        except Exception:
            self.server._release(file)
            raise
        if r is not None and isawaitable(r):
            return self.remove_later(m.tag, file, self.backend(r))
        r = self.fs.clunk(file)
        if r is not None and isawaitable(r):
            return self.then(self.backend(r), Rremove(m.tag))
        return Rremove(m.tag)

    async def remove_later(self, tag, file, aw):
        try:
            await aw
        except Exception:
            self.server._release(file)
            raise
        r = self.fs.clunk(file)
        if r is not None and isawaitable(r):
            await r
        return Rremove(tag)

    def stat(self, m):
        fid = self.fids.get(m.fid)
        if fid is None:
            raise Error(E.EUNKNOWNFID)
        return Rstat(m.tag, self.fs.stat(fid.file))

    def wstat(self, m):
        r = self.fs.wstat(self.getfid(m.fid).file, m.stat)
        if r is not None and isawaitable(r):
            return self.then(self.backend(r), Rwstat(m.tag))
        return Rwstat(m.tag)


class Server:
    """Serves fs (see the module docstring for its contract) to any number of connections.

    stats: T-message name -> [count, seconds spent answering the timed ones, how many were
           timed] (one request in TIME_EVERY is timed), for /stats; the lists are updated in
           place, so read them, or zero them with clear_stats().
    peers: the Peer of every live connection, for the console's `who`.
    """

    def __init__(self, fs, *, msize=DEFAULT_MSIZE, max_fids=65536, max_tags=256, log=None):
        if msize < MIN_MSIZE:
            raise ValueError('msize %d is below %d' % (msize, MIN_MSIZE))
        self.fs = fs
        self.msize = msize
        self.max_fids = max_fids
        self.max_tags = max_tags
        self.log = log if log is not None else logging.getLogger(__name__)
        self.stats = {}
        self._counters = {}
        for cls in codec.MESSAGES:
            if cls.__name__.startswith('T'):
                self._counters[cls.type] = self.stats[cls.__name__] = [0, 0.0, 0]
        self.peers = set()
        self._conns = set()
        self._listeners = []
        self._unix_paths = []       # (path, inode) of sockets we made, removed by close
        self._background = set()    # clunks still running after their fid went away

    def clear_stats(self):
        """Zero every counter (console `stats -c`); the lists in stats are kept."""
        for counter in self.stats.values():
            counter[0] = 0
            counter[1] = 0.0
            counter[2] = 0

    def _release(self, file):
        """Clunk a file whose fid is gone, with no one to answer: errors are only logged."""
        try:
            r = self.fs.clunk(file)
        except Exception:
            self.log.exception('clunk failed')
            return
        if r is not None and isawaitable(r):
            task = asyncio.get_running_loop().create_task(self._await_release(r))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _await_release(self, aw):
        try:
            await aw
        except Exception:
            self.log.exception('clunk failed')

    async def listen_tcp(self, host='127.0.0.1', port=564):
        """Listen on host:port (port 0: any free port); returns the asyncio.Server."""
        loop = asyncio.get_running_loop()
        srv = await loop.create_server(lambda: _Connection(self, 'tcp', None), host, port)
        self._listeners.append(srv)
        return srv

    async def listen_unix(self, path, mode=0o600):
        """Listen on a Unix socket at path, readable and writable as mode allows.

        A stale socket file (nobody listening) is replaced; a live one, or any other kind
        of file, is refused with OSError.
        """
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            pass
        else:
            if not statmod.S_ISSOCK(st.st_mode):
                raise FileExistsError(errno.EEXIST, 'exists and is not a socket', path)
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            probe.settimeout(1)
            try:
                probe.connect(path)
            except ConnectionRefusedError:
                os.unlink(path)
            except FileNotFoundError:
                pass
            else:
                raise OSError(errno.EADDRINUSE, 'a server is already listening', path)
            finally:
                probe.close()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(path)
            # Nobody can connect before listen(), which create_unix_server does: the mode is
            # right before the first client arrives.
            os.chmod(path, mode)
            inode = os.lstat(path).st_ino
            loop = asyncio.get_running_loop()
            srv = await loop.create_unix_server(
                lambda: _Connection(self, 'unix', path), sock=sock)
        except BaseException:
            sock.close()
            raise
        self._unix_paths.append((path, inode))
        self._listeners.append(srv)
        return srv

    async def close(self):
        """Stop listening, close every connection (clunking its fids), remove our sockets."""
        for srv in self._listeners:
            srv.close()
        for srv in self._listeners:
            await srv.wait_closed()
        self._listeners.clear()
        tasks = []
        for conn in list(self._conns):
            tasks.extend(conn.inflight.values())
            conn.shutdown()
            conn.transport.abort()
        for task in tasks:
            task.cancel()           # even unstarted ones: a request may wait forever
        tasks.extend(self._background)
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        for path, inode in self._unix_paths:
            try:
                if os.lstat(path).st_ino == inode:
                    os.unlink(path)
            except OSError:
                pass
        self._unix_paths.clear()
