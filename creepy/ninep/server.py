"""9P service over TCP and Unix sockets: the asyncio adapter around session.Session.

This module owns sockets, listeners and the event loop; everything the protocol says lives in
session.py, which never does I/O.  A connection here only moves bytes: it lends the session's
framer its buffer to receive into, feeds each frame to the session, writes what the session
produced, runs the session's pending work as tasks and hands their outcome back.  It must
never know about disks, blocks or the tree's internals (see session.py for the backend
contract).

What a connection may cost is bounded here (DESIGN invariant 11):
- frames: before Tversion a frame above session.PRE_VERSION_FRAME closes the connection;
  after it, above the negotiated msize;
- replies nobody reads: once more than `max_unsent` bytes wait to be written to a client
  that does not read them, no further frame of that connection is handled (nor read from
  its socket) until the client has read enough of them;
- requests that wait: once the frames of a connection's requests in flight (a Twrite
  waiting for a freeze to end, or for the console) pass `max_pending` bytes, no further
  frame of it is handled until some of them are answered;
- frames announced and not sent: a frame of 64 KiB or more gets its whole buffer as soon as
  its size field arrives while the server's `max_ahead` bytes (all connections together)
  allow it, else once a quarter of it has arrived (codec.Ahead, codec.Framer);
- connections: past `max_conns` a new connection gets one Rerror ("too many connections")
  and is closed.
"""

import asyncio
import errno
import logging
import os
import socket
import stat as statmod
import struct
import sys

from creepy import errors as E

from . import codec
from .codec import IOHDRSZ, NOTAG, ProtocolError, Rerror, encode
from .session import BIG_PAYLOAD, MIN_MSIZE, PRE_VERSION_FRAME, Peer, Session

__all__ = ['Server', 'Peer', 'DEFAULT_MSIZE', 'MIN_MSIZE', 'DEFAULT_MAX_CONNS',
           'PRE_VERSION_FRAME']

DEFAULT_MSIZE = (1 << 20) + IOHDRSZ     # a 1 MiB payload per Tread/Twrite
#: connections served at once unless the program says otherwise (9pix -n)
DEFAULT_MAX_CONNS = 512
#: bytes of replies a client may leave unread before its further requests wait
DEFAULT_MAX_UNSENT = 8 << 20
#: bytes of requests in flight (their frames) before a client's further requests wait
DEFAULT_MAX_PENDING = 8 << 20
#: bytes of large frames' buffers allocated ahead of their arrival, all connections together
#: (codec.Ahead): a 1 MiB Twrite is received in place from its first bytes
DEFAULT_MAX_AHEAD = 32 << 20
# Replies gathered while handling a buffer of frames are written once they reach this.
_FLUSH_AT = 256 << 10
# ... or, while one connection at a time has requests to handle, every _SPLIT replies.
_SPLIT = 4
_NEVER = 1 << 62
# asyncio's own transports write a list of buffers with one sendmsg from Python 3.12 on;
# before, writelines joins them (a copy).  uvloop's always write them with one writev.
_ASYNCIO_GATHERS = sys.version_info >= (3, 12)

_PEERCRED = struct.Struct('3i')


class _Connection(asyncio.BufferedProtocol):
    """One client: bytes between its socket and its Session, and the Session's work run."""

    def __init__(self, server, kind, path):
        self.server = server
        self.kind = kind
        self.path = path
        self.transport = None
        self.session = None
        self.peer = None
        self.tasks = set()
        self.closing = False
        self.shut = False
        self.wpaused = False        # the transport's buffer is over its high-water mark
        self.held = False           # frames wait in the framer until replies drain
        self.gathers = False        # transport.writelines writes buffers without copying
        self.last_pass = 0          # the server's pass of the event loop it was last busy in

    # -- connection life ---------------------------------------------------------------

    def connection_made(self, transport):
        self.transport = transport
        self.gathers = _ASYNCIO_GATHERS or type(transport).__module__.startswith('uvloop')
        server = self.server
        # Reading stops when max_unsent bytes of replies wait (pause_writing), not at the
        # transport's default 64 KiB: a client with several 1 MiB reads in flight has that
        # much waiting as a matter of course, and a stop at every reply turns its pipeline
        # into a ping-pong.
        transport.set_write_buffer_limits(high=server.max_unsent)
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
        self.session = Session(server.fs, self.peer, msize=server.msize,
                               max_fids=server.max_fids, max_tags=server.max_tags,
                               counters=server._counters, log=server.log,
                               ahead=server.ahead)
        if len(server._conns) >= server.max_conns:
            server.log.warning('%s: refused: %d connections already', addr, len(server._conns))
            self.shut = self.closing = True
            transport.write(encode(Rerror(NOTAG, E.ETOOMANYCONNS)))
            transport.close()
            return
        try:
            server.fs.connect(self.peer)
        except Exception as e:
            server.log.warning('%s: refused by the file system: %s', addr, e)
            self.shut = True
            transport.abort()
            return
        server._conns.add(self)
        server.peers.add(self.peer)

    def connection_lost(self, exc):
        self.shutdown()

    def shutdown(self):
        """Cancel in-flight requests, clunk every fid, tell the backend.  Idempotent."""
        if self.shut:
            return
        self.shut = True
        self.closing = True
        self.session.framer.close()
        self.session.abort()
        self.start_work()
        try:
            self.server.fs.disconnect(self.peer)
        except Exception:
            self.server.log.exception('%s: disconnect failed', self.peer.addr)
        self.server._conns.discard(self)
        self.server.peers.discard(self.peer)

    def pause_writing(self):
        # The client is not reading its replies: stop reading its requests.
        self.wpaused = True
        self.transport.pause_reading()

    def resume_writing(self):
        self.wpaused = False
        if self.closing:
            return
        if not self.held:
            self.transport.resume_reading()
        elif not self.over():
            self.unhold()

    def fatal(self, why):
        self.server.log.warning('%s: closing: %s', self.peer.addr, why)
        self.closing = True
        self.transport.close()

    # -- frames in, replies out ---------------------------------------------------------

    def get_buffer(self, sizehint):
        return self.session.framer.get_buffer(sizehint)

    def buffer_updated(self, nbytes):
        self.session.framer.buffer_updated(nbytes)
        if not self.closing and not self.held:
            self.handle_frames()

    def handle_frames(self):
        """Feed the session every whole frame received, until the replies waiting to be
        read pass max_unsent, or the requests in flight max_pending: the rest stays in the
        framer until they drain."""
        session = self.session
        receive = session.receive
        server = self.server
        max_pending = server.max_pending
        # Replies are written once they reach _FLUSH_AT, or sooner once they would take the
        # transport's buffer past max_unsent: a client that reads nothing has at most one
        # reply more than max_unsent waiting.
        room = self.room()
        # While this is the only connection with requests to handle (in the loop's last
        # pass), its replies also go out every _SPLIT: the client works on the first ones
        # while the rest are made, instead of client and server taking turns over a whole
        # window of requests (16 in flight on one connection: 1.8x the round trips on 2
        # CPUs).  With several connections busy the server's CPU is what is short, and one
        # write a buffer of requests costs least (12 connections: 310k round trips a second
        # against 240k split).
        if not server._ticking:
            server._ticking = True
            server._pass += 1
            asyncio.get_running_loop().call_soon(server._tick)
        if self.last_pass != server._pass:
            self.last_pass = server._pass
            server._busy += 1
        split = _SPLIT if server._was_busy <= 1 else _NEVER
        try:
            for frame in session.framer.frames():
                receive(frame)
                if session.closing is not None:
                    self.fatal(session.closing)
                    break
                if session.out_bytes >= room or len(session.out) >= split:
                    self.flush()
                    if self.over():
                        self.hold()
                        break
                    room = self.room()
                elif session.pending_bytes > max_pending:
                    self.hold()
                    break
        except ProtocolError as e:      # the framer lost the frame boundary
            self.fatal(str(e))
        except Exception as e:          # a bug here: lose this connection, not the server
            self.server.log.exception('%s: request handling failed', self.peer.addr)
            self.fatal(repr(e))
        self.flush()
        self.start_work()
        if not self.held and self.over():
            self.hold()

    def room(self):
        """Bytes of replies to gather before writing them."""
        room = self.server.max_unsent - self.transport.get_write_buffer_size()
        return room if room < _FLUSH_AT else _FLUSH_AT

    def over(self):
        return ((self.wpaused and self.transport.get_write_buffer_size() > self.server.max_unsent)
                or self.session.pending_bytes > self.server.max_pending)

    def hold(self):
        self.held = True
        self.transport.pause_reading()

    def unhold(self):
        """Handle the frames held in the framer, then read the socket again unless the
        transport still asks us not to (pause_writing)."""
        self.held = False
        self.handle_frames()
        if not self.held and not self.closing and not self.wpaused:
            self.transport.resume_reading()

    def flush(self):
        session = self.session
        out = session.out
        if not out:
            return
        if not self.closing:
            write = self.transport.write
            if len(out) == 1:
                write(out[0])
            elif not session.out_big:
                write(b''.join(out))
            elif self.gathers:
                # One vectored write: large payloads (a read's pieces) are never copied.
                self.transport.writelines(out)
            else:
                # Small replies in one write; a large payload on its own, not copied.
                small = []
                for part in out:
                    if len(part) >= BIG_PAYLOAD:
                        if small:
                            write(small[0] if len(small) == 1 else b''.join(small))
                            small = []
                        write(part)
                    else:
                        small.append(part)
                if small:
                    write(small[0] if len(small) == 1 else b''.join(small))
        out.clear()
        session.out_bytes = 0
        session.out_big = False

    def start_work(self):
        """Run the session's new Work as tasks, and its background clunks."""
        session = self.session
        if session.started:
            loop = asyncio.get_running_loop()
            for work in session.started:
                if not work.dead:
                    work.task = task = loop.create_task(self.run(work))
                    self.tasks.add(task)
                    task.add_done_callback(self.tasks.discard)
            session.started.clear()
        if session.background:
            for aw in session.background:
                self.server._run_background(aw)
            session.background.clear()

    async def run(self, work):
        try:
            result = await work.coro
        except asyncio.CancelledError:
            return
        except Exception as e:
            result = e
        session = self.session
        session.complete(work, result)
        self.flush()
        self.start_work()
        if not self.held:
            if self.over():
                self.hold()
        elif not self.closing and not self.over():
            self.unhold()


class Server:
    """Serves fs (see session.py for its contract) to any number of connections.

    stats: T-message name -> [count, seconds spent answering the timed ones, how many were
           timed] (one request in TIME_EVERY is timed), for /stats; the lists are updated in
           place, so read them, or zero them with clear_stats().
    peers: the Peer of every live connection, for the console's `who`.
    """

    def __init__(self, fs, *, msize=DEFAULT_MSIZE, max_fids=65536, max_tags=256,
                 max_conns=DEFAULT_MAX_CONNS, max_unsent=DEFAULT_MAX_UNSENT,
                 max_pending=DEFAULT_MAX_PENDING, max_ahead=DEFAULT_MAX_AHEAD, log=None):
        if msize < MIN_MSIZE:
            raise ValueError('msize %d is below %d' % (msize, MIN_MSIZE))
        if max_conns < 1:
            raise ValueError('max_conns %d: at least one connection must be allowed' % max_conns)
        self.fs = fs
        self.msize = msize
        self.max_fids = max_fids
        self.max_tags = max_tags
        self.max_conns = max_conns
        self.max_unsent = max_unsent
        self.max_pending = max_pending
        self.ahead = codec.Ahead(max_ahead)
        self.log = log if log is not None else logging.getLogger(__name__)
        self.stats = {}
        self._counters = {}
        for cls in codec.MESSAGES + codec.L_MESSAGES:       # both dialects' requests
            if cls.__name__.startswith('T') and cls.type not in self._counters:
                self._counters[cls.type] = self.stats[cls.__name__] = [0, 0.0, 0]
        self.peers = set()
        # Connections that handled requests in this pass of the event loop, and in the last
        # pass that had any (_Connection.handle_frames); the pass's number.
        self._busy = 0
        self._was_busy = 0
        self._ticking = False
        self._pass = 0
        self._conns = set()
        self._listeners = []
        self._unix_paths = []       # (path, inode) of sockets we made, removed by close
        self._background = set()    # clunks still running after their fid went away

    def _tick(self):
        """The loop's pass is over: what was busy in it predicts the next."""
        self._was_busy = self._busy
        self._busy = 0
        self._ticking = False

    def clear_stats(self):
        """Zero every counter (console `stats -c`); the lists in stats are kept."""
        for counter in self.stats.values():
            counter[0] = 0
            counter[1] = 0.0
            counter[2] = 0

    def _run_background(self, aw):
        """Run the clunk of a file whose fid is gone, with no one to answer: errors are only
        logged."""
        task = asyncio.get_running_loop().create_task(self._await_release(aw))
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
            tasks.extend(conn.tasks)
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
