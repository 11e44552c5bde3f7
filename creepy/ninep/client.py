"""A 9P2000 and 9P2000.L client: many requests in flight on one connection, plus path helpers.

Used by the command-line tools, scripts and tests to talk to any 9P2000
server.  It speaks through the sans-IO codec (``codec``) and dials through
``dial``; it must never know the server's insides (no tree, no store).

How it works.  ``Client.connect`` dials, sends Tversion and Tattach.  Every
request takes a free tag, registers a future under it, writes its frame and
waits; the protocol's ``buffer_updated`` cuts replies out of the stream with
the codec's ``Framer`` and completes the future registered under each reply's
tag, so replies may come back in any order.  Fids come from a counter with a
free list.

Tags and fids are reused only when the server is done with them:

* a tag is free once its reply has arrived; if the waiting coroutine is
  cancelled first, the client sends Tflush and keeps the old tag until Rflush
  (a late reply to it is dropped);
* a fid is free after Tclunk or Tremove were answered (even by Rerror: the
  fid is gone then too, see clunk(5)), or when a walk to it failed.  A fid
  whose request was cancelled is never reused: the server may hold it.

Dialects.  ``Client.connect(..., version="9P2000.L")`` speaks Linux's dialect: every
9P2000.L message has its method here (``lopen``, ``getattr``, ``readdir``, ``renameat``...),
and the path helpers (``read_file``, ``write_file``, ``listdir``, ``stat_path``, ``mkdir``,
``truncate``, ``chmod``, ``rename``, ``sync_file``...) work in either dialect, using that
dialect's messages.

Errors.  An Rerror raises ``Error9P`` carrying the server's string (an Rlerror: the
errno's text, and the errno in ``.errno``); a lost
connection raises ``ConnectionError``; a server that speaks garbage closes
the connection with ``ConnectionError``.

``SyncClient`` runs a ``Client`` on a private event loop in a background
thread and offers the same methods, blocking.
"""

from __future__ import annotations

import asyncio
import functools
import threading

import os

from . import codec, dial
from .codec import (
    DMDIR, DMSYMLINK, IOHDRSZ, MAXWELEM, NOFID, NONUNAME, NOTAG, OREAD, ORDWR, OTRUNC,
    OWRITE, QTAPPEND, QTDIR, Ahead, Framer, ProtocolError, Qid, Rattach, Rauth, Rclunk,
    Rcreate, Rerror, Rflush, Rlerror, Ropen, Rread, Rremove, Rstat, Rversion, Rwalk, Rwrite,
    Rwstat, Stat, Tattach, Tauth, Tclunk, Tcreate, Tflush, Topen, Tread, Tremove, Tstat,
    Tversion, Twalk, Twrite, Twstat, encode, encode_parts, unpack_dirents, unpack_stat,
)

__all__ = ["Client", "SyncClient", "Error9P", "nochange", "VERSION", "VERSION_L",
           "DEFAULT_MSIZE", "PROMPT"]

VERSION = "9P2000"
VERSION_L = "9P2000.L"
_DIALECTS = {VERSION: codec.NINEP2000, VERSION_L: codec.NINEP2000L}
# Linux's open flags and setattr bits, for the 9P2000.L requests the path helpers make
_O_TRUNC, _O_EXCL = 0o1000, 0o200
_SETATTR_MODE, _SETATTR_SIZE = 1, 8
_S_IFMT, _S_IFDIR, _S_IFLNK = 0o170000, 0o040000, 0o120000
#: 1 MiB of payload per message, plus the header of a read or write
DEFAULT_MSIZE = (1 << 20) + IOHDRSZ
#: requests one client keeps in flight at most (servers bound outstanding tags too)
DEFAULT_INFLIGHT = 64
#: chunks of one large write in flight at once
WRITE_WINDOW = 8
#: what the console prints when it is ready for the next command
PROMPT = "creepy> "


class Error9P(Exception):
    """The server answered Rerror; ``ename`` (and str()) is its error string.  For a 9P2000.L
    Rlerror ``errno`` is the number and ``ename`` its text (os.strerror); else errno is None."""

    def __init__(self, ename: str, errno: int | None = None):
        super().__init__(ename)
        self.ename = ename
        self.errno = errno


def nochange() -> Stat:
    """A stat for Twstat that changes nothing: ~0 in every number, '' in every string.

    Set the fields to change on it.  Sent unmodified it asks the server to
    commit the file to stable storage (9P2000 has no fsync).
    """
    return Stat(type=0xFFFF, dev=0xFFFFFFFF, qid=Qid(0xFF, 0xFFFFFFFF, 0xFFFFFFFFFFFFFFFF),
                mode=0xFFFFFFFF, atime=0xFFFFFFFF, mtime=0xFFFFFFFF,
                length=0xFFFFFFFFFFFFFFFF, name="", uid="", gid="", muid="")


def _split(path: str) -> list[str]:
    """'/a//b/' -> ['a', 'b']; '.' components are dropped; '..' is walked as given."""
    return [p for p in path.split("/") if p and p != "."]


class _Numbers:
    """Small integers handed out from a counter, recycled through a free list."""

    __slots__ = ("_next", "_limit", "_free", "_used", "_what")

    def __init__(self, first: int, limit: int, what: str):
        self._next = first
        self._limit = limit  # exclusive
        self._free: list[int] = []
        self._used: set[int] = set()
        self._what = what

    def alloc(self) -> int:
        if self._free:
            n = self._free.pop()
        elif self._next < self._limit:
            n = self._next
            self._next += 1
        else:
            raise RuntimeError(f"out of {self._what}s")
        self._used.add(n)
        return n

    def release(self, n: int) -> None:
        if n in self._used:
            self._used.remove(n)
            self._free.append(n)

    def reset(self) -> None:
        self._free.extend(self._used)
        self._used.clear()


class _Protocol(asyncio.BufferedProtocol):
    """Bytes from the socket into the framer, replies out to the client."""

    def __init__(self, client: Client):
        self.client = client

    def connection_made(self, transport):
        self.client._transport = transport

    def get_buffer(self, sizehint):
        return self.client._framer.get_buffer(sizehint)

    def buffer_updated(self, nbytes):
        c = self.client
        c._framer.buffer_updated(nbytes)
        try:
            for frame in c._framer.frames():
                try:
                    msg = c._decode(frame)
                except ProtocolError as e:
                    if e.fatal or e.tag is None or e.tag not in c._pending:
                        raise
                    c._reply_error(e.tag, e)
                    continue
                c._reply(msg)
        except ProtocolError as e:
            c._abort(ConnectionError(f"9P: server sent garbage: {e}"))

    def eof_received(self):
        return False  # close our side too

    def connection_lost(self, exc):
        self.client._lost(exc)

    def pause_writing(self):
        self.client._paused = True

    def resume_writing(self):
        c = self.client
        c._paused = False
        for w in c._drainers:
            if not w.done():
                w.set_result(None)
        c._drainers.clear()


class Client:
    """One 9P2000 connection.  Build it with ``await Client.connect(addr)``.

    Low level: the 9P requests by fid (``walk``, ``open``, ``read``...).
    High level: '/'-separated paths (``read_file``, ``write_file``,
    ``listdir``...), relative to the attach root, or to the directory a fid
    given as ``fid=`` stands on: a deep tree is then walked once per
    directory, not from the root for every file.  The fid is walked from,
    never opened or clunked.
    """

    def __init__(self, msize: int = DEFAULT_MSIZE, max_inflight: int = DEFAULT_INFLIGHT):
        self.msize = msize
        self.root: int | None = None  # the fid Tattach gave us
        self.root_qid: Qid | None = None
        # A large reply is received in place from its first bytes: one frame at a time may
        # take its whole buffer ahead of its bytes (its server is the one we asked).
        self._framer = Framer(msize, Ahead(msize))
        self._transport = None
        self._pending: dict[int, asyncio.Future] = {}
        self._flushing: set[int] = set()  # tags abandoned and flushed, held until Rflush
        self._tags = _Numbers(0, NOTAG, "tag")
        self._fids = _Numbers(0, NOFID, "fid")
        self._opened: dict[int, tuple[Qid, int]] = {}  # fid -> (qid, iounit) after open/create
        self._slots = asyncio.Semaphore(max_inflight)
        self._paused = False
        self._drainers: list[asyncio.Future] = []
        self._error: Exception | None = None  # why the connection is unusable
        self._closed = asyncio.get_running_loop().create_future()
        self._background: set[asyncio.Task] = set()
        self.dialect = VERSION      # what Tversion agreed on
        self._decode = codec.NINEP2000.decode

    # -- connection -------------------------------------------------------

    @classmethod
    async def connect(cls, addr: dial.Address | str, *, msize: int = DEFAULT_MSIZE,
                      uname: str | None = None, aname: str = "",
                      max_inflight: int = DEFAULT_INFLIGHT, version: str = VERSION,
                      n_uname: int = NONUNAME) -> Client:
        """Dial ``addr`` (any form ``dial.parse`` takes), negotiate msize and the dialect
        (``version``: "9P2000" or "9P2000.L"), attach ``aname``.

        ``uname`` defaults to the Unix user running us; with 9P2000.L ``n_uname`` names the
        user by number instead.  The attached fid is ``root``.
        """
        self = cls(msize, max_inflight)
        await dial.create_connection(addr, lambda: _Protocol(self))
        try:
            await self.version(msize, version)
            self.root = self.alloc_fid()
            self.root_qid = await self.attach(self.root, dial.getuser() if uname is None else uname,
                                              aname, n_uname=n_uname)
        except BaseException:
            await self.close()
            raise
        return self

    async def close(self) -> None:
        """Hang up; every fid is gone, every request still waiting fails."""
        if self._transport is not None:
            self._transport.close()
            await asyncio.shield(self._closed)

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.close()

    @property
    def closed(self) -> bool:
        return self._error is not None

    def _lost(self, exc):
        self._abort(ConnectionError(f"9P connection lost: {exc}" if exc else "9P connection closed"))
        if not self._closed.done():
            self._closed.set_result(None)

    def _abort(self, error: Exception):
        if self._error is None:
            self._error = error
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(self._error)
        self._pending.clear()
        for w in self._drainers:
            if not w.done():
                w.set_result(None)
        self._drainers.clear()
        if self._transport is not None:
            self._transport.close()

    # -- requests and replies ---------------------------------------------

    def _reply(self, msg):
        tag = msg.tag
        fut = self._pending.pop(tag, None)
        if fut is None:
            return  # a reply to a request flushed and forgotten, or a confused server
        if tag not in self._flushing:
            self._tags.release(tag)
        if not fut.done():
            fut.set_result(msg)

    def _reply_error(self, tag, error):
        fut = self._pending.pop(tag)
        if tag not in self._flushing:
            self._tags.release(tag)
        if not fut.done():
            fut.set_exception(error)

    def _send(self, msg):
        if msg.__class__ is Twrite:
            self._transport.writelines(encode_parts(msg))
        else:
            self._transport.write(encode(msg))

    async def _rpc(self, build, rtype, tag=None):
        """Send ``build(tag)``, wait for its reply; return it if it is an ``rtype``."""
        if self._error is not None:
            raise self._error
        async with self._slots:
            if self._error is not None:
                raise self._error
            if tag is None:
                tag = self._tags.alloc()
            try:
                msg = build(tag)  # a field out of range raises here, before anything is sent
            except BaseException:
                self._tags.release(tag)
                raise
            fut = self._pending[tag] = asyncio.get_running_loop().create_future()
            self._send(msg)
            try:
                if self._paused:
                    w = asyncio.get_running_loop().create_future()
                    self._drainers.append(w)
                    await w
                r = await fut
            except asyncio.CancelledError:
                if self._pending.get(tag) is fut and tag != NOTAG:
                    self._flushing.add(tag)
                    t = asyncio.get_running_loop().create_task(self._flush_quietly(tag))
                    self._background.add(t)
                    t.add_done_callback(self._background.discard)
                raise
        if r.__class__ is rtype:
            return r
        if r.__class__ is Rerror:
            raise Error9P(r.ename)
        if r.__class__ is Rlerror:
            raise Error9P(os.strerror(r.ecode), r.ecode)
        self._abort(ConnectionError(f"9P: server answered {r!r} to {msg!r}"))
        raise self._error

    async def _flush_quietly(self, oldtag):
        try:
            await self.flush(oldtag)
        except (ConnectionError, Error9P):
            pass

    # -- fids -------------------------------------------------------------

    def alloc_fid(self) -> int:
        """A fid number not in use on this connection; give it back with ``clunk``."""
        return self._fids.alloc()

    def free_fid(self, fid: int) -> None:
        """Give back a fid number the server does not hold (e.g. after a failed walk)."""
        self._opened.pop(fid, None)
        self._fids.release(fid)

    def iounit(self, fid: int) -> int:
        """Most bytes one read or write on ``fid`` carries."""
        unit = self.msize - IOHDRSZ
        opened = self._opened.get(fid)
        if opened is not None and 0 < opened[1] < unit:
            unit = opened[1]
        return unit

    # -- 9P requests, by fid ----------------------------------------------

    async def version(self, msize: int, version: str = VERSION) -> Rversion:
        """Tversion: (re)start the session.  Every fid is forgotten; msize becomes the agreed
        one, and the dialect ``version`` (the server must agree to it)."""
        if version not in _DIALECTS:
            raise ValueError(f"unknown 9P dialect {version!r}")
        r = await self._rpc(lambda t: Tversion(t, msize, version), Rversion, tag=NOTAG)
        self.dialect = version
        self._decode = _DIALECTS[version].decode
        if r.version != version:
            self._abort(ConnectionError(f"9P: server speaks {r.version!r}, not {version!r}"))
            raise self._error
        if not 0 < r.msize <= msize or r.msize <= IOHDRSZ:
            self._abort(ConnectionError(f"9P: server chose msize {r.msize} (we asked {msize})"))
            raise self._error
        self.msize = r.msize
        self._framer.msize = r.msize
        self._fids.reset()
        self._opened.clear()
        self.root = self.root_qid = None
        return r

    async def auth(self, afid: int, uname: str, aname: str = "") -> Qid:
        """Tauth: ``afid`` becomes an authentication file; return its qid."""
        if self.dialect == VERSION_L:
            return (await self._rpc(lambda t: codec.TauthL(t, afid, uname, aname, NONUNAME),
                                    Rauth)).aqid
        return (await self._rpc(lambda t: Tauth(t, afid, uname, aname), Rauth)).aqid

    async def attach(self, fid: int, uname: str, aname: str = "", afid: int = NOFID,
                     n_uname: int = NONUNAME) -> Qid:
        """Tattach: ``fid`` becomes the root of tree ``aname`` for ``uname`` (9P2000.L: or
        for the numeric user ``n_uname``)."""
        if self.dialect == VERSION_L:
            r = await self._rpc(lambda t: codec.TattachL(t, fid, afid, uname, aname, n_uname),
                                Rattach)
        else:
            r = await self._rpc(lambda t: Tattach(t, fid, afid, uname, aname), Rattach)
        return r.qid

    async def walk(self, fid: int, newfid: int, names=()) -> list[Qid]:
        """Twalk, any number of names (sent MAXWELEM at a time).

        Returns the qids walked.  ``newfid`` is valid only if there is one qid
        per name; a walk that stops early leaves newfid unused (the number is
        still the caller's to free or reuse).  Rerror on the first name raises.
        """
        names = list(names)
        if newfid == fid and len(names) > MAXWELEM:
            raise ValueError(f"walking a fid in place takes at most {MAXWELEM} names")
        first = names[:MAXWELEM]
        qids = list((await self._rpc(lambda t: Twalk(t, fid, newfid, first), Rwalk)).wqids)
        if len(qids) != len(first):
            return qids
        for i in range(MAXWELEM, len(names), MAXWELEM):
            step = names[i:i + MAXWELEM]
            try:
                r = await self._rpc(lambda t: Twalk(t, newfid, newfid, step), Rwalk)
            except Error9P:
                r = None
            if r is None or len(r.wqids) != len(step):
                try:  # newfid stands half way: drop it, as a failed walk leaves no newfid
                    await self._rpc(lambda t: Tclunk(t, newfid), Rclunk)
                except Error9P:
                    pass
                return qids + list(r.wqids if r else ())
            qids.extend(r.wqids)
        return qids

    async def open(self, fid: int, mode: int) -> tuple[Qid, int]:
        """Topen (9P2000.L: Tlopen with the same access and O_TRUNC): return (qid, iounit)."""
        if self.dialect == VERSION_L:
            return await self.lopen(fid, (mode & 3) | (_O_TRUNC if mode & OTRUNC else 0))
        r = await self._rpc(lambda t: Topen(t, fid, mode), Ropen)
        self._opened[fid] = (r.qid, r.iounit)
        return r.qid, r.iounit

    async def create(self, fid: int, name: str, perm: int, mode: int) -> tuple[Qid, int]:
        """Tcreate: ``fid`` (a directory) becomes the new file, open; return (qid, iounit).
        9P2000.L: Tlcreate, or for a directory (DMDIR in perm) Tmkdir then Twalk and Tlopen
        of the new directory on fid."""
        if self.dialect == VERSION_L:
            if perm & DMDIR:
                await self.lmkdir(fid, name, perm & 0o777)
                await self.walk(fid, fid, [name])
                return await self.lopen(fid, mode & 3)
            return await self.lcreate(fid, name, (mode & 3) | (_O_TRUNC if mode & OTRUNC else 0)
                                      | _O_EXCL, perm & 0o777)
        r = await self._rpc(lambda t: Tcreate(t, fid, name, perm, mode), Rcreate)
        self._opened[fid] = (r.qid, r.iounit)
        return r.qid, r.iounit

    async def read(self, fid: int, offset: int, count: int) -> bytes:
        """Tread of at most ``count`` bytes (clipped to the iounit); b'' at the end."""
        count = min(count, self.iounit(fid))
        return (await self._rpc(lambda t: Tread(t, fid, offset, count), Rread)).data

    async def write(self, fid: int, offset: int, data) -> int:
        """Twrite ``data`` at ``offset``, in iounit-sized pieces; return the bytes written.

        Pieces go out WRITE_WINDOW at a time, except to an append-only file
        where order matters.  A short count or an error ends the write: the
        result is the length of the prefix known to be written (an error with
        nothing written raises).
        """
        view = memoryview(data).cast("B")
        unit = self.iounit(fid)
        if len(view) <= unit:
            return (await self._rpc(lambda t: Twrite(t, fid, offset, view), Rwrite)).count
        pieces = [(offset + i, view[i:i + unit]) for i in range(0, len(view), unit)]
        opened = self._opened.get(fid)
        window = 1 if opened is not None and opened[0].type & QTAPPEND else WRITE_WINDOW
        gate = asyncio.Semaphore(window)
        stop = False

        async def one(off, piece):
            async with gate:
                if stop:
                    return 0
                return (await self._rpc(lambda t: Twrite(t, fid, off, piece), Rwrite)).count

        tasks = [asyncio.ensure_future(one(off, piece)) for off, piece in pieces]
        total = 0
        try:
            for (off, piece), task in zip(pieces, tasks):
                try:
                    n = await task
                except Error9P:
                    if total == 0:
                        raise
                    n = 0
                total += n
                if n < len(piece):
                    break
        finally:
            stop = True
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        return total

    async def clunk(self, fid: int) -> None:
        """Tclunk; the fid is free afterwards, even if the server answered Rerror."""
        try:
            await self._rpc(lambda t: Tclunk(t, fid), Rclunk)
        except Error9P:
            self.free_fid(fid)
            raise
        self.free_fid(fid)

    def clunk_soon(self, fid: int) -> None:
        """Tclunk without waiting for its answer: for a caller that is done with ``fid`` and
        would only wait.  The fid is free once answered; errors are ignored (the fid is gone
        then too) and a lost connection takes every fid with it."""
        t = asyncio.get_running_loop().create_task(self._clunk_silently(fid))
        self._background.add(t)
        t.add_done_callback(self._background.discard)

    async def _clunk_silently(self, fid):
        try:
            await self.clunk(fid)
        except (Error9P, ConnectionError):
            pass

    async def remove(self, fid: int) -> None:
        """Tremove; the fid is free afterwards, even if the server answered Rerror."""
        try:
            await self._rpc(lambda t: Tremove(t, fid), Rremove)
        except Error9P:
            self.free_fid(fid)
            raise
        self.free_fid(fid)

    async def stat(self, fid: int) -> Stat:
        """Tstat (9P2000.L: Tgetattr, as a Stat with no name and numeric uid and gid)."""
        if self.dialect == VERSION_L:
            return _stat_of_attr(await self.getattr(fid), "")
        return (await self._rpc(lambda t: Tstat(t, fid), Rstat)).stat

    async def wstat(self, fid: int, st: Stat) -> None:
        """Twstat; start from ``nochange()`` and set only the fields to change.  9P2000.L has
        no wstat: there a no-change stat is Tfsync, a length or mode is Tsetattr."""
        if self.dialect == VERSION_L:
            valid = 0
            if st.length != 0xFFFFFFFFFFFFFFFF:
                valid |= _SETATTR_SIZE
            if st.mode != 0xFFFFFFFF:
                valid |= _SETATTR_MODE
            if not valid and not st.name and not st.uid and not st.gid:
                await self.fsync(fid)
                return
            if st.name or st.uid or st.gid or st.mtime != 0xFFFFFFFF:
                raise ValueError("9P2000.L: use setattr or renameat for this change")
            await self.setattr(fid, valid, mode=st.mode & 0o777, size=st.length)
            return
        await self._rpc(lambda t: Twstat(t, fid, st), Rwstat)

    async def flush(self, oldtag: int) -> None:
        """Tflush ``oldtag``.  If its request got no reply by Rflush, it raises
        Error9P("interrupted"); its tag is reused only after Rflush."""
        if oldtag in self._pending:
            self._flushing.add(oldtag)
        await self._rpc(lambda t: Tflush(t, oldtag), Rflush)
        if oldtag in self._flushing:
            self._flushing.discard(oldtag)
            fut = self._pending.pop(oldtag, None)
            if fut is not None and not fut.done():
                fut.set_exception(Error9P("interrupted"))
            self._tags.release(oldtag)

    def pending_tags(self) -> list[int]:
        """Tags of the requests waiting for a reply (what ``flush`` takes)."""
        return sorted(t for t, fut in self._pending.items() if not fut.done())

    # -- paths ------------------------------------------------------------

    async def walkpath(self, path: str, fid: int | None = None) -> int:
        """A new fid for ``path`` (relative to ``fid``, by default the attach root)."""
        start = self.root if fid is None else fid
        names = _split(path)
        newfid = self.alloc_fid()
        try:
            qids = await self.walk(start, newfid, names)
        except Error9P:
            self.free_fid(newfid)
            raise
        except asyncio.CancelledError:
            raise  # the server may hold newfid: never reuse the number
        if len(qids) != len(names):
            self.free_fid(newfid)
            raise Error9P("file does not exist")
        return newfid

    async def _with(self, path: str, job, fid: int | None = None):
        f = await self.walkpath(path, fid)
        try:
            return await job(f)
        finally:
            if not self.closed:
                await self._clunk_quietly(f)

    async def _clunk_quietly(self, fid):
        try:
            await self.clunk(fid)
        except Error9P:
            pass

    async def stat_path(self, path: str, fid: int | None = None) -> Stat:
        return await self._with(path, self.stat, fid)

    async def read_file(self, path: str, fid: int | None = None) -> bytes:
        """The whole content of the file at ``path``."""
        async def job(f):
            await self.open(f, OREAD)
            return await self._read_all(f)
        return await self._with(path, job, fid)

    async def _read_all(self, fid) -> bytes:
        parts = []
        offset = 0
        while True:
            data = await self.read(fid, offset, self.iounit(fid))
            if not data:
                return b"".join(parts)
            parts.append(data)
            offset += len(data)

    async def _open_or_create(self, path: str, perm: int, mode: int,
                              fid: int | None = None) -> int:
        """A fid open with ``mode`` on ``path``, created with ``perm`` if it does not exist."""
        try:
            f = await self.walkpath(path, fid)
        except Error9P:
            f = None
        if f is None:
            names = _split(path)
            if not names:
                raise Error9P("file does not exist")
            f = await self.walkpath("/".join(names[:-1]), fid)
            try:
                await self.create(f, names[-1], perm, mode & ~OTRUNC)
            except BaseException:
                await self._clunk_quietly(f)
                raise
            return f
        try:
            await self.open(f, mode)
        except BaseException:
            await self._clunk_quietly(f)
            raise
        return f

    async def _write_all(self, f, offset, data):
        n = await self.write(f, offset, data)
        if n != len(data):
            raise Error9P(f"short write: {n} of {len(data)} bytes")

    async def write_file(self, path: str, data, perm: int = 0o644, trunc: bool = True,
                         fid: int | None = None) -> None:
        """Write ``data`` from offset 0, creating the file with ``perm`` if missing."""
        f = await self._open_or_create(path, perm, OWRITE | (OTRUNC if trunc else 0), fid)
        try:
            await self._write_all(f, 0, data)
        finally:
            await self._clunk_quietly(f)

    async def append(self, path: str, data, perm: int = 0o644, fid: int | None = None) -> None:
        """Write ``data`` at the end of the file, creating it with ``perm`` if missing."""
        f = await self._open_or_create(path, perm, OWRITE, fid)
        try:
            await self._write_all(f, (await self.stat(f)).length, data)
        finally:
            await self._clunk_quietly(f)

    async def mkdir(self, path: str, perm: int = 0o755, fid: int | None = None) -> Qid:
        """Create the directory ``path``; its parent must exist."""
        names = _split(path)
        if not names:
            raise Error9P("file already exists")
        f = await self.walkpath("/".join(names[:-1]), fid)
        try:
            qid, _ = await self.create(f, names[-1], DMDIR | perm, OREAD)
        finally:
            await self._clunk_quietly(f)
        return qid

    async def remove_path(self, path: str, fid: int | None = None) -> None:
        await self.remove(await self.walkpath(path, fid))

    async def listdir(self, path: str = "", fid: int | None = None) -> list[Stat]:
        """The stat of every entry of the directory ``path`` (from ``fid``, by default the
        attach root), in the server's order (with 9P2000.L: from Treaddir and a Tgetattr of
        each, "." and ".." left out)."""
        if self.dialect == VERSION_L:
            return await self._listdir_l(path, fid)

        async def job(f):
            await self.open(f, OREAD)
            return await self.dirreadall(f)
        return await self._with(path, job, fid)

    async def dirreadall(self, fid: int) -> list[Stat]:
        """The stat of every entry of the directory open on ``fid``, read to its end, as
        Plan 9's dirreadall(2) (9P2000: with 9P2000.L, readdir_all)."""
        data = await self._read_all(fid)
        entries = []
        offset = 0
        while offset < len(data):
            st, offset = unpack_stat(data, offset)
            entries.append(st)
        return entries

    async def _wstat_path(self, path: str, fid: int | None = None, **fields) -> None:
        st = nochange()
        for k, v in fields.items():
            setattr(st, k, v)
        await self._with(path, lambda f: self.wstat(f, st), fid)

    async def rename(self, path: str, newname: str, fid: int | None = None) -> None:
        """Rename within the same directory (9P2000 cannot move): ``newname`` is a name."""
        if not newname or "/" in newname:
            raise ValueError(f"rename takes a name, not a path: {newname!r}")
        if self.dialect == VERSION_L:
            names = _split(path)
            parent = "/".join(names[:-1])
            await self._with(parent, lambda d: self.renameat(d, names[-1], d, newname), fid)
            return
        await self._wstat_path(path, fid, name=newname)

    async def chmod(self, path: str, mode: int) -> None:
        """Set permission bits.  When ``mode`` has only the low 9 bits, the file's
        other mode bits (DMDIR, DMAPPEND, DMEXCL...) are kept as they are."""
        if self.dialect == VERSION_L:
            await self._with(path, lambda f: self.setattr(f, _SETATTR_MODE, mode=mode & 0o777))
            return
        if (mode & ~0o777) == 0:
            mode |= (await self.stat_path(path)).mode & ~0o777
        await self._wstat_path(path, mode=mode)

    async def truncate(self, path: str, length: int = 0) -> None:
        await self._wstat_path(path, length=length)

    async def sync_file(self, path: str) -> None:
        """Ask the server to commit ``path`` to stable storage: a wstat changing nothing."""
        await self._wstat_path(path)

    async def cons(self, command: str, fid: int | None = None, timeout: float = 5.0) -> str:
        """Run one console command and return what the console printed for it.

        The console is the file ``cons`` at the top of the ``main`` tree:
        ``fid`` is a fid attached with aname "main" (by default ``root``, when
        the client itself attached "main").  The command line is written, then
        the console is read until its output ends with the prompt (``PROMPT``)
        after the echo of our line, or nothing arrives for ``timeout``
        seconds.  Returned: the output after our echoed line (if echoed),
        without the final prompt.  Output written by other console users at
        the same time may be mixed in: the console is one shared stream.
        """
        line = command.strip() + "\n"  # the console echoes the line stripped

        async def job(f):
            await self.open(f, ORDWR)
            await self._write_all(f, 0, line.encode())
            out = ""
            while True:
                try:
                    data = await asyncio.wait_for(self.read(f, 0, self.iounit(f)), timeout)
                except asyncio.TimeoutError:
                    break
                if not data:
                    break
                out += data.decode("utf-8", "replace")
                if _console_reply(out, line)[1]:
                    break
            return _console_reply(out, line)[0]
        return await self._with("cons", job, fid)


    # -- 9P2000.L requests, by fid -----------------------------------------

    async def lopen(self, fid: int, flags: int) -> tuple[Qid, int]:
        """Tlopen with Linux open flags: return (qid, iounit)."""
        r = await self._rpc(lambda t: codec.Tlopen(t, fid, flags), codec.Rlopen)
        self._opened[fid] = (r.qid, r.iounit)
        return r.qid, r.iounit

    async def lcreate(self, fid: int, name: str, flags: int, mode: int,
                      gid: int = 0) -> tuple[Qid, int]:
        """Tlcreate: ``fid`` (a directory) becomes the new file, open; (qid, iounit)."""
        r = await self._rpc(lambda t: codec.Tlcreate(t, fid, name, flags, mode, gid),
                            codec.Rlcreate)
        self._opened[fid] = (r.qid, r.iounit)
        return r.qid, r.iounit

    async def getattr(self, fid: int, mask: int = 0x3FFF) -> codec.Message:
        """Tgetattr: the Rgetattr (POSIX mode, numeric uid and gid, size, times...)."""
        return await self._rpc(lambda t: codec.Tgetattr(t, fid, mask), codec.Rgetattr)

    async def setattr(self, fid: int, valid: int, *, mode: int = 0, uid: int = 0, gid: int = 0,
                      size: int = 0, atime: tuple[int, int] = (0, 0),
                      mtime: tuple[int, int] = (0, 0)) -> None:
        """Tsetattr: change what the ``valid`` bits (P9_ATTR_*) name; times as (s, ns)."""
        await self._rpc(lambda t: codec.Tsetattr(t, fid, valid, mode, uid, gid, size,
                                                 atime[0], atime[1], mtime[0], mtime[1]),
                        codec.Rsetattr)

    async def readdir(self, fid: int, offset: int = 0,
                      count: int | None = None) -> list[tuple[Qid, int, int, str]]:
        """Treaddir: [(qid, offset of the next entry, d_type, name)]; [] at the end."""
        count = min(count or self.iounit(fid), self.iounit(fid))
        r = await self._rpc(lambda t: codec.Treaddir(t, fid, offset, count), codec.Rreaddir)
        return unpack_dirents(r.data)

    async def readdir_all(self, fid: int) -> list[tuple[Qid, int, int, str]]:
        """Every entry of an open directory, Treaddir after Treaddir."""
        out = []
        offset = 0
        while True:
            got = await self.readdir(fid, offset)
            if not got:
                return out
            out.extend(got)
            offset = got[-1][1]

    async def lmkdir(self, dfid: int, name: str, mode: int, gid: int = 0) -> Qid:
        """Tmkdir: make directory ``name`` in ``dfid``; its qid."""
        return (await self._rpc(lambda t: codec.Tmkdir(t, dfid, name, mode, gid),
                                codec.Rmkdir)).qid

    async def symlink(self, dfid: int, name: str, target: str, gid: int = 0) -> Qid:
        """Tsymlink: ``name`` in ``dfid`` becomes a symbolic link to ``target``; its qid."""
        return (await self._rpc(lambda t: codec.Tsymlink(t, dfid, name, target, gid),
                                codec.Rsymlink)).qid

    async def readlink(self, fid: int) -> str:
        """Treadlink: the target of the symbolic link ``fid``."""
        return (await self._rpc(lambda t: codec.Treadlink(t, fid), codec.Rreadlink)).target

    async def renameat(self, olddirfid: int, oldname: str, newdirfid: int, newname: str) -> None:
        """Trenameat: rename(2) between directories."""
        await self._rpc(lambda t: codec.Trenameat(t, olddirfid, oldname, newdirfid, newname),
                        codec.Rrenameat)

    async def lrename(self, fid: int, dfid: int, name: str) -> None:
        """Trename: the file ``fid`` moves into directory ``dfid`` as ``name``."""
        await self._rpc(lambda t: codec.Trename(t, fid, dfid, name), codec.Rrename)

    async def unlinkat(self, dirfid: int, name: str, flags: int = 0) -> None:
        """Tunlinkat: remove ``name`` from ``dirfid`` (flags 0x200, AT_REMOVEDIR: a directory)."""
        await self._rpc(lambda t: codec.Tunlinkat(t, dirfid, name, flags), codec.Runlinkat)

    async def link(self, dfid: int, fid: int, name: str) -> None:
        """Tlink: a hard link ``name`` in ``dfid`` to ``fid``'s file."""
        await self._rpc(lambda t: codec.Tlink(t, dfid, fid, name), codec.Rlink)

    async def mknod(self, dfid: int, name: str, mode: int, major: int = 0, minor: int = 0,
                    gid: int = 0) -> Qid:
        """Tmknod."""
        return (await self._rpc(lambda t: codec.Tmknod(t, dfid, name, mode, major, minor, gid),
                                codec.Rmknod)).qid

    async def statfs(self, fid: int) -> codec.Message:
        """Tstatfs: the Rstatfs (block size, blocks, free, available, longest name...)."""
        return await self._rpc(lambda t: codec.Tstatfs(t, fid), codec.Rstatfs)

    async def fsync(self, fid: int, datasync: int = 0) -> None:
        """Tfsync: the server commits the file to stable storage before it answers."""
        await self._rpc(lambda t: codec.Tfsync(t, fid, datasync), codec.Rfsync)

    async def lock(self, fid: int, ltype: int, start: int = 0, length: int = 0, *,
                   flags: int = 0, proc_id: int | None = None, client_id: str = "creepy") -> int:
        """Tlock (type 0 read, 1 write, 2 unlock): the status (0 ok, 1 blocked, 2 error)."""
        pid = os.getpid() if proc_id is None else proc_id
        return (await self._rpc(lambda t: codec.Tlock(t, fid, ltype, flags, start, length, pid,
                                                      client_id), codec.Rlock)).status

    async def getlock(self, fid: int, ltype: int, start: int = 0, length: int = 0, *,
                      proc_id: int | None = None, client_id: str = "creepy") -> codec.Message:
        """Tgetlock: the Rgetlock (ltype 2, unlock, when nothing is in the way)."""
        pid = os.getpid() if proc_id is None else proc_id
        return await self._rpc(lambda t: codec.Tgetlock(t, fid, ltype, start, length, pid,
                                                        client_id), codec.Rgetlock)

    async def xattrwalk(self, fid: int, newfid: int, name: str = "") -> int:
        """Txattrwalk: ``newfid`` reads the attribute ``name`` ('': the list); its size."""
        return (await self._rpc(lambda t: codec.Txattrwalk(t, fid, newfid, name),
                                codec.Rxattrwalk)).size

    async def xattrcreate(self, fid: int, name: str, size: int, flags: int = 0) -> None:
        """Txattrcreate."""
        await self._rpc(lambda t: codec.Txattrcreate(t, fid, name, size, flags),
                        codec.Rxattrcreate)

    async def _listdir_l(self, path: str, fid: int | None = None) -> list[Stat]:
        async def job(f):
            await self.lopen(f, 0)
            entries = []
            for _, _, _, name in await self.readdir_all(f):
                if name in (".", ".."):
                    continue
                g = await self.walkpath(name, f0)
                try:
                    entries.append(_stat_of_attr(await self.getattr(g), name))
                finally:
                    await self._clunk_quietly(g)
            return entries
        f0 = await self.walkpath(path, fid)
        try:
            return await self._with(path, job, fid)
        finally:
            await self._clunk_quietly(f0)


def _stat_of_attr(a, name: str) -> Stat:
    """A 9P2000 Stat of an Rgetattr: mode bits and qid as 9P2000 has them, uid and gid the
    numbers as text, times in seconds."""
    kind = a.mode & _S_IFMT
    mode = (a.mode & 0o777) | (DMDIR if kind == _S_IFDIR else 0) | (
        DMSYMLINK if kind == _S_IFLNK else 0)
    return Stat(qid=a.qid, mode=mode, atime=a.atime_sec, mtime=a.mtime_sec,
                length=0 if a.qid.type & QTDIR else a.size, name=name, uid=str(a.uid),
                gid=str(a.gid), muid="")


def _console_reply(out: str, line: str) -> tuple[str, bool]:
    """(the console's reply to ``line`` found in ``out``, whether it is complete).

    The reply follows the echo of the line (or, with no echo, any prompts
    left from before) and is complete when a prompt ends it; the prompt is
    not part of the reply.
    """
    echo = out.find(line)
    if echo >= 0:
        body = out[echo + len(line):]
    else:
        body = out
        while body.startswith(PROMPT):
            body = body[len(PROMPT):]
        if not body:
            return "", False
    if body.endswith(PROMPT):
        return body[:-len(PROMPT)], True
    return body, False


class SyncClient:
    """A ``Client`` driven from blocking code: its own event loop on a daemon thread.

    ``SyncClient(addr, **connect_kwargs)``; every method of ``Client`` is here
    with the same arguments, blocking until done.  Use as a context manager or
    call ``close()``.
    """

    def __init__(self, addr, *, timeout: float | None = None, **kwargs):
        self.timeout = timeout
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="9p-client", daemon=True)
        self._thread.start()
        try:
            self.client: Client = self._run(Client.connect(addr, **kwargs))
        except BaseException:
            self._stop()
            raise

    def _run(self, coro):
        fut = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return fut.result(self.timeout)
        except TimeoutError:
            fut.cancel()  # the request is flushed, as in the async client
            raise

    def _stop(self):
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def close(self) -> None:
        if self._loop.is_closed():
            return
        try:
            self._run(self.client.close())
        finally:
            self._stop()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def root(self) -> int:
        return self.client.root

    @property
    def msize(self) -> int:
        return self.client.msize

    def alloc_fid(self) -> int:
        return self.client.alloc_fid()

    def free_fid(self, fid: int) -> None:
        self.client.free_fid(fid)

    def iounit(self, fid: int) -> int:
        return self.client.iounit(fid)


def _blocking(name):
    method = getattr(Client, name)

    @functools.wraps(method)
    def call(self, *args, **kwargs):
        return self._run(method(self.client, *args, **kwargs))
    return call


for _name in ("version", "auth", "attach", "walk", "open", "create", "read", "write", "clunk",
              "remove", "stat", "wstat", "flush", "walkpath", "stat_path", "read_file", "readdir",
              "write_file", "append", "mkdir", "remove_path", "listdir", "rename", "chmod",
              "truncate", "sync_file", "cons", "lopen", "lcreate", "getattr", "setattr",
              "readdir", "readdir_all", "lmkdir", "symlink", "readlink", "renameat",
              "lrename", "unlinkat", "link", "mknod", "statfs", "fsync", "lock", "getlock",
              "xattrwalk", "xattrcreate"):
    setattr(SyncClient, _name, _blocking(_name))
del _name
