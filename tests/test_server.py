"""The 9P service layer against a small in-memory backend, over loopback TCP and Unix sockets.

Each test starts its own server on 127.0.0.1 (port 0) or a Unix socket in a temporary
directory; run one with `python -m pytest tests/test_server.py -k <name>`.
"""

import asyncio
import os
import socket
import stat as statmod
import struct

import pytest
from hypothesis import given, settings, strategies as st

from creepy.ninep import codec
from creepy.ninep.codec import (
    NOFID, NOTAG, OREAD, ORDWR, OWRITE, QTDIR, DMDIR, Qid, Stat, decode, encode, unpack_stat,
    Tversion, Rversion, Tauth, Tattach, Rattach, Rerror, Tflush, Rflush, Twalk, Rwalk,
    Topen, Ropen, Tcreate, Rcreate, Tread, Rread, Twrite, Rwrite, Tclunk, Rclunk,
    Tremove, Rremove, Tstat, Rstat, Twstat, Rwstat,
)
from creepy import errors as E
from creepy.ninep import server as ninep_server
from creepy.ninep.server import Server

TIMEOUT = 20


# -- a backend: a tree of dicts ---------------------------------------------------------

class FsError(Exception):
    def __init__(self, ename):
        super().__init__(ename)
        self.ename = ename


class Node:
    _next_path = 1

    def __init__(self, name, parent, isdir, data=b''):
        self.name = name
        self.parent = parent or self
        self.isdir = isdir
        self.children = {} if isdir else None
        self.data = bytearray(data)
        self.path = Node._next_path
        Node._next_path += 1

    @property
    def qid(self):
        return Qid(QTDIR if self.isdir else 0, 0, self.path)


class File:
    """What the backend hands the server: a reference to a node."""

    def __init__(self, node):
        self.node = node

    @property
    def qid(self):
        return self.node.qid

    @property
    def isdir(self):
        return self.node.isdir


class FakeFs:
    """Follows the server's backend contract.  Reads and writes of files named slow* wait for
    a gate."""

    def __init__(self):
        self.root = Node('/', None, True)
        self.connected = []
        self.disconnected = []
        self.clunked = []
        self.wstats = []
        self.gates = {}

    def mkdir(self, path):
        node = self.root
        for name in path.strip('/').split('/'):
            if name:
                node = node.children.setdefault(name, Node(name, node, True))
        return node

    def mkfile(self, path, data=b''):
        parent, _, name = path.strip('/').rpartition('/')
        dir = self.mkdir(parent)
        dir.children[name] = Node(name, dir, False, data)
        return dir.children[name]

    def gate(self, name):
        return self.gates.setdefault(name, asyncio.Event())

    def connect(self, peer):
        self.connected.append(peer)

    def disconnect(self, peer):
        self.disconnected.append(peer)

    def auth(self, peer, uname, aname):
        raise FsError('authentication not required')

    def attach(self, peer, uname, aname):
        if aname == 'crash':
            raise ZeroDivisionError('attach blew up')
        if aname not in ('', 'main'):
            raise FsError('unknown tree')
        return File(self.root)

    def clone(self, file):
        return File(file.node)

    def walk1(self, file, name):
        node = file.node
        if not node.isdir:
            raise FsError('not a directory')
        if name == '..':
            return File(node.parent)
        child = node.children.get(name)
        if child is None:
            raise FsError('file does not exist')
        return File(child)

    def open(self, file, mode):
        if file.node.isdir and mode & 3 != OREAD:
            raise FsError('is a directory')
        if mode & codec.OTRUNC:
            file.node.data.clear()

    def create(self, file, name, perm, mode):
        if name in file.node.children:
            raise FsError('file already exists')
        node = Node(name, file.node, bool(perm & DMDIR))
        file.node.children[name] = node
        file.node = node

    def read(self, file, offset, count):
        node = file.node
        if node.name.startswith('slow'):
            return self._slow_read(node, offset, count)
        if node.name == 'oversize':
            return b'z' * (count + 100)
        return bytes(node.data[offset:offset + count])

    async def _slow_read(self, node, offset, count):
        await self.gate(node.name).wait()
        if node.name == 'slowfail':
            raise FsError('slow failure')
        return bytes(node.data[offset:offset + count])

    def stat_of(self, node):
        return Stat(qid=node.qid, mode=(DMDIR | 0o755) if node.isdir else 0o644,
                    length=0 if node.isdir else len(node.data), name=node.name,
                    uid='glenda', gid='glenda', muid='glenda')

    def dirents(self, file, cursor):
        names = sorted(file.node.children)
        for i in range(cursor or 0, len(names)):
            yield self.stat_of(file.node.children[names[i]]), i + 1

    def write(self, file, offset, data):
        node = file.node
        if node.name.startswith('slow'):
            return self._slow_write(node, offset, data)
        if node.name == 'asyncwrite':
            return self._async_write(node, offset, data)
        node.data[offset:offset + len(data)] = data
        return len(data)

    async def _slow_write(self, node, offset, data):
        await self.gate(node.name).wait()
        node.data[offset:offset + len(data)] = data
        return len(data)

    async def _async_write(self, node, offset, data):
        await asyncio.sleep(0)
        node.data[offset:offset + len(data)] = data
        return len(data)

    def clunk(self, file):
        self.clunked.append(file.node.name)

    def remove(self, file):
        node = file.node
        if node.isdir and node.children:
            raise FsError('directory not empty')
        del node.parent.children[node.name]

    def stat(self, file):
        if file.node.name == 'badstat':
            return Stat(length=-1)
        return self.stat_of(file.node)

    def wstat(self, file, st):
        self.wstats.append((file.node.name, st))
        return self._wstat_later()

    async def _wstat_later(self):
        await asyncio.sleep(0)


# -- a minimal client on the codec ------------------------------------------------------

class Client:
    live = []       # closed by close_clients at the end of each test

    def __init__(self, reader, writer):
        self.reader = reader
        self.writer = writer
        Client.live.append(self)

    @classmethod
    async def tcp(cls, port):
        return cls(*await asyncio.open_connection('127.0.0.1', port))

    @classmethod
    async def unix(cls, path):
        return cls(*await asyncio.open_unix_connection(path))

    def send(self, msg):
        self.writer.write(encode(msg))

    def send_raw(self, data):
        self.writer.write(data)

    async def recv(self):
        head = await self.reader.readexactly(4)
        size = struct.unpack('<I', head)[0]
        return decode(head + await self.reader.readexactly(size - 4))

    async def rpc(self, msg):
        self.send(msg)
        reply = await self.recv()
        assert reply.tag == msg.tag, (msg, reply)
        return reply

    async def closed_by_server(self):
        """True if the server closes the connection without sending anything more."""
        try:
            return await self.reader.read(1) == b''
        except ConnectionResetError:
            return True

    async def version(self, msize=8192):
        return await self.rpc(Tversion(NOTAG, msize, '9P2000'))

    async def attach(self, fid=0, msize=8192):
        await self.version(msize)
        return await self.rpc(Tattach(1, fid, NOFID, 'glenda', ''))

    def close(self):
        self.writer.close()


async def close_clients():
    for c in Client.live:
        c.writer.close()
        try:
            await c.writer.wait_closed()
        except OSError:
            pass
    Client.live.clear()


def named_like(test):
    """Name a synchronous runner after the async test it runs (pytest collects by name).

    Not functools.wraps: pytest would then read the wrapped test's arguments as fixtures.
    """
    def name(run):
        run.__name__ = run.__qualname__ = test.__name__
        run.__doc__ = test.__doc__
        return run
    return name


def serving(test=None, **server_options):
    """Run an async test with a fresh FakeFs and Server listening on 127.0.0.1."""
    def wrap(test):
        @named_like(test)
        def run():
            async def main():
                fs = FakeFs()
                srv = Server(fs, **server_options)
                listener = await srv.listen_tcp('127.0.0.1', 0)
                port = listener.sockets[0].getsockname()[1]
                try:
                    await asyncio.wait_for(test(fs, srv, port), TIMEOUT)
                finally:
                    await close_clients()
                    await srv.close()
            asyncio.run(main())
        return run
    return wrap(test) if test is not None else wrap


async def still_serves(port):
    """A second connection works: the server survived whatever the first one did."""
    c = await Client.tcp(port)
    reply = await c.attach()
    c.close()
    return isinstance(reply, Rattach)


# -- version ----------------------------------------------------------------------------

@serving
async def test_version_answers_the_smaller_msize(fs, srv, port):
    c = await Client.tcp(port)
    assert await c.version(8192) == Rversion(NOTAG, 8192, '9P2000')
    assert await c.version(1 << 30) == Rversion(NOTAG, ninep_server.DEFAULT_MSIZE, '9P2000')


@serving(msize=65536 + 24)
async def test_version_is_clamped_to_the_configured_msize(fs, srv, port):
    c = await Client.tcp(port)
    assert (await c.version(1 << 20)).msize == 65536 + 24


@serving
async def test_version_9p2000_dialects_are_answered_9p2000(fs, srv, port):
    c = await Client.tcp(port)
    reply = await c.rpc(Tversion(NOTAG, 8192, '9P2000.u'))
    assert reply.version == '9P2000'


@serving
async def test_unknown_version_is_answered_unknown_and_nothing_else_is_served(fs, srv, port):
    c = await Client.tcp(port)
    assert (await c.rpc(Tversion(NOTAG, 8192, '9P1999'))).version == 'unknown'
    assert (await c.rpc(Tversion(NOTAG, 8192, '9P20000'))).version == 'unknown'
    reply = await c.rpc(Tattach(1, 0, NOFID, 'glenda', ''))
    assert reply == Rerror(1, E.ENOVERSION)


@serving
async def test_requests_before_tversion_get_rerror(fs, srv, port):
    c = await Client.tcp(port)
    assert await c.rpc(Tstat(3, 0)) == Rerror(3, E.ENOVERSION)
    assert isinstance(await c.attach(), Rattach)


@serving
async def test_msize_below_256_is_refused(fs, srv, port):
    c = await Client.tcp(port)
    assert await c.rpc(Tversion(NOTAG, 128, '9P2000')) == Rerror(NOTAG, E.EMSIZE)


@serving
async def test_tversion_clunks_every_fid(fs, srv, port):
    fs.mkfile('/a/b')
    c = await Client.tcp(port)
    await c.attach(fid=0)
    assert isinstance(await c.rpc(Twalk(2, 0, 1, ['a'])), Rwalk)
    assert isinstance(await c.rpc(Twalk(3, 1, 2, ['b'])), Rwalk)
    await c.version()
    assert sorted(fs.clunked) == ['/', 'a', 'b']
    for fid in (0, 1, 2):
        assert await c.rpc(Tstat(4, fid)) == Rerror(4, E.EUNKNOWNFID)


@serving
async def test_tversion_cancels_requests_in_flight_unanswered(fs, srv, port):
    fs.mkfile('/slow', b'data')
    c = await Client.tcp(port)
    await c.attach()
    await c.rpc(Twalk(2, 0, 1, ['slow']))
    await c.rpc(Topen(3, 1, OREAD))
    c.send(Tread(4, 1, 0, 10))
    await asyncio.sleep(0.05)
    assert await c.version() == Rversion(NOTAG, 8192, '9P2000')
    fs.gate('slow').set()
    assert await c.rpc(Tstat(5, 1)) == Rerror(5, E.EUNKNOWNFID)


# -- attach, auth, errors from the backend ------------------------------------------------

@serving
async def test_attach_sets_the_peer_uname_and_peers_lists_the_connection(fs, srv, port):
    c = await Client.tcp(port)
    await c.attach()
    (peer,) = srv.peers
    assert peer.uname == 'glenda' and peer.transport == 'tcp' and peer.cred is None
    assert peer.addr.startswith('tcp!127.0.0.1!')
    assert fs.connected == [peer]
    c.close()
    for _ in range(100):
        if not srv.peers:
            break
        await asyncio.sleep(0.01)
    assert not srv.peers and fs.disconnected == [peer] and fs.clunked == ['/']


@serving
async def test_backend_error_with_ename_is_sent_as_is(fs, srv, port):
    c = await Client.tcp(port)
    await c.version()
    assert await c.rpc(Tattach(1, 0, NOFID, 'glenda', 'nosuch')) == Rerror(1, 'unknown tree')
    assert await c.rpc(Tauth(2, 5, 'glenda', '')) == Rerror(2, 'authentication not required')


@serving
async def test_backend_crash_is_an_internal_error_and_the_connection_keeps_serving(fs, srv, port):
    c = await Client.tcp(port)
    await c.version()
    reply = await c.rpc(Tattach(1, 0, NOFID, 'glenda', 'crash'))
    assert reply == Rerror(1, 'internal error: attach blew up')
    assert isinstance(await c.rpc(Tattach(2, 0, NOFID, 'glenda', '')), Rattach)


@serving
async def test_a_reply_that_cannot_be_encoded_becomes_an_internal_error(fs, srv, port):
    fs.mkfile('/badstat')
    c = await Client.tcp(port)
    await c.attach()
    await c.rpc(Twalk(2, 0, 1, ['badstat']))
    reply = await c.rpc(Tstat(3, 1))
    assert isinstance(reply, Rerror) and reply.ename.startswith('internal error: ')


@serving
async def test_attach_to_a_fid_in_use_is_refused(fs, srv, port):
    c = await Client.tcp(port)
    await c.attach(fid=0)
    assert await c.rpc(Tattach(2, 0, NOFID, 'glenda', '')) == Rerror(2, E.EFIDINUSE)


# -- walk -------------------------------------------------------------------------------

@serving
async def test_walk_returns_one_qid_per_name(fs, srv, port):
    b = fs.mkfile('/usr/glenda/lib/profile')
    c = await Client.tcp(port)
    await c.attach()
    reply = await c.rpc(Twalk(2, 0, 1, ['usr', 'glenda', 'lib', 'profile']))
    assert len(reply.wqids) == 4 and reply.wqids[-1] == b.qid
    assert (await c.rpc(Tstat(3, 1))).stat.name == 'profile'


@serving
async def test_partial_walk_returns_the_qids_walked_and_leaves_newfid_unset(fs, srv, port):
    fs.mkdir('/usr/glenda')
    c = await Client.tcp(port)
    await c.attach()
    reply = await c.rpc(Twalk(2, 0, 1, ['usr', 'glenda', 'nothere', 'x']))
    assert isinstance(reply, Rwalk) and len(reply.wqids) == 2
    assert await c.rpc(Tstat(3, 1)) == Rerror(3, E.EUNKNOWNFID)


@serving
async def test_walk_failing_at_the_first_name_is_an_error(fs, srv, port):
    c = await Client.tcp(port)
    await c.attach()
    assert await c.rpc(Twalk(2, 0, 1, ['nothere'])) == Rerror(2, 'file does not exist')
    assert await c.rpc(Tstat(3, 1)) == Rerror(3, E.EUNKNOWNFID)


@serving
async def test_walk_with_17_names_is_refused(fs, srv, port):
    c = await Client.tcp(port)
    await c.attach()
    names = b''.join(struct.pack('<H', 1) + b'a' for _ in range(17))
    body = struct.pack('<IIH', 0, 1, 17) + names
    c.send_raw(struct.pack('<IBH', 7 + len(body), Twalk.type, 9) + body)
    reply = await c.recv()
    assert isinstance(reply, Rerror) and reply.tag == 9
    assert await still_serves(port)


@pytest.mark.parametrize('name, error', [
    ('a/b', E.EBADNAME), ('a\0b', E.EBADNAME),
    ('.', E.EILLEGALNAME), ('', E.EILLEGALNAME),
    ('x' * 256, E.ENAMETOOLONG), ('é' * 128, E.ENAMETOOLONG),
])
def test_walk_names_with_slash_nul_dot_or_too_long_are_refused(name, error):
    @serving
    async def check(fs, srv, port):
        fs.mkdir('/a')
        c = await Client.tcp(port)
        await c.attach()
        assert await c.rpc(Twalk(2, 0, 1, ['a', name])) == Rerror(2, error)
        assert await c.rpc(Tstat(3, 1)) == Rerror(3, E.EUNKNOWNFID)
    check()


@serving
async def test_walk_dotdot_goes_to_the_parent(fs, srv, port):
    usr = fs.mkdir('/usr/glenda').parent
    c = await Client.tcp(port)
    await c.attach()
    reply = await c.rpc(Twalk(2, 0, 1, ['usr', 'glenda', '..']))
    assert reply.wqids[-1] == usr.qid


@serving
async def test_walk_with_no_names_clones_the_fid(fs, srv, port):
    c = await Client.tcp(port)
    await c.attach()
    assert await c.rpc(Twalk(2, 0, 1, [])) == Rwalk(2, ())
    assert (await c.rpc(Tstat(3, 1))).stat.qid == fs.root.qid
    assert await c.rpc(Twalk(4, 0, 1, [])) == Rerror(4, E.EFIDINUSE)


@serving
async def test_walk_in_place_moves_the_fid(fs, srv, port):
    fs.mkdir('/usr')
    c = await Client.tcp(port)
    await c.attach()
    await c.rpc(Twalk(2, 0, 0, ['usr']))
    assert (await c.rpc(Tstat(3, 0))).stat.name == 'usr'


@serving
async def test_an_open_fid_is_not_walked_but_may_be_cloned(fs, srv, port):
    # walk(5): "the fid must not have been opened for I/O".  A clone (no names, another
    # fid) is allowed: Linux clones the open fid of an unlinked file to open it again.
    fs.mkdir('/usr')
    c = await Client.tcp(port)
    await c.attach()
    assert isinstance(await c.rpc(Topen(2, 0, OREAD)), Ropen)
    assert await c.rpc(Twalk(3, 0, 1, ['usr'])) == Rerror(3, E.EWALKOPEN)
    assert await c.rpc(Twalk(5, 0, 0, ['usr'])) == Rerror(5, E.EWALKOPEN)
    assert await c.rpc(Twalk(6, 0, 0, [])) == Rerror(6, E.EWALKOPEN)
    assert await c.rpc(Tstat(7, 1)) == Rerror(7, E.EUNKNOWNFID)     # no newfid was made
    assert await c.rpc(Twalk(8, 0, 1, [])) == Rwalk(8, ())
    assert isinstance(await c.rpc(Topen(9, 1, OREAD)), Ropen)       # the clone is not open


@serving
async def test_walk_of_an_unknown_fid_is_refused(fs, srv, port):
    c = await Client.tcp(port)
    await c.attach()
    assert await c.rpc(Twalk(2, 7, 8, [])) == Rerror(2, E.EUNKNOWNFID)


# -- open, create, read, write, clunk, remove, stat, wstat ------------------------------------

@serving
async def test_open_read_write_round_trip_and_iounit(fs, srv, port):
    fs.mkfile('/f', b'hello')
    c = await Client.tcp(port)
    await c.attach()
    await c.rpc(Twalk(2, 0, 1, ['f']))
    reply = await c.rpc(Topen(3, 1, ORDWR))
    assert reply.iounit == 8192 - 24
    assert await c.rpc(Topen(4, 1, ORDWR)) == Rerror(4, 'fid already open')
    assert await c.rpc(Twrite(5, 1, 5, b' world')) == Rwrite(5, 6)
    assert await c.rpc(Tread(6, 1, 0, 100)) == Rread(6, b'hello world')


@serving
async def test_read_or_write_on_a_fid_not_open_is_refused(fs, srv, port):
    fs.mkfile('/f', b'x')
    c = await Client.tcp(port)
    await c.attach()
    await c.rpc(Twalk(2, 0, 1, ['f']))
    assert await c.rpc(Tread(3, 1, 0, 1)) == Rerror(3, 'fid not open')
    assert await c.rpc(Twrite(4, 1, 0, b'y')) == Rerror(4, 'fid not open')
    await c.rpc(Topen(5, 1, OREAD))
    assert await c.rpc(Twrite(6, 1, 0, b'y')) == Rerror(6, E.ENOTWRITE)
    await c.rpc(Twalk(7, 0, 2, ['f']))
    await c.rpc(Topen(8, 2, OWRITE))
    assert await c.rpc(Tread(9, 2, 0, 1)) == Rerror(9, E.ENOTREAD)


@serving
async def test_read_count_is_clamped_to_msize_minus_24(fs, srv, port):
    fs.mkfile('/big', bytes(100000))
    fs.mkfile('/oversize')
    c = await Client.tcp(port)
    await c.attach(msize=4096)
    await c.rpc(Twalk(2, 0, 1, ['big']))
    await c.rpc(Topen(3, 1, OREAD))
    assert len((await c.rpc(Tread(4, 1, 0, 50000))).data) == 4096 - 24
    await c.rpc(Twalk(5, 0, 2, ['oversize']))
    await c.rpc(Topen(6, 2, OREAD))
    assert len((await c.rpc(Tread(7, 2, 0, 10))).data) == 10        # backend sent more


@serving
async def test_one_mib_reads_and_writes_cross_intact(fs, srv, port):
    payload = bytes(range(256)) * 4096
    fs.mkfile('/big', b'')
    c = await Client.tcp(port)
    await c.attach(msize=ninep_server.DEFAULT_MSIZE)
    await c.rpc(Twalk(2, 0, 1, ['big']))
    await c.rpc(Topen(3, 1, ORDWR))
    assert await c.rpc(Twrite(4, 1, 0, payload)) == Rwrite(4, len(payload))
    for tag in range(5, 9):          # several big replies back to back, then a small one
        c.send(Tread(tag, 1, 0, len(payload)))
    c.send(Tstat(9, 1))
    for tag in range(5, 9):
        assert await c.recv() == Rread(tag, payload)
    assert (await c.recv()).stat.length == len(payload)


@serving
async def test_create_opens_the_new_file_and_refuses_bad_names(fs, srv, port):
    c = await Client.tcp(port)
    await c.attach()
    for name, error in (('..', E.EILLEGALNAME), ('a/b', E.EBADNAME)):
        await c.rpc(Twalk(2, 0, 1, []))
        assert await c.rpc(Tcreate(3, 1, name, 0o644, ORDWR)) == Rerror(3, error)
        await c.rpc(Tclunk(4, 1))
    await c.rpc(Twalk(2, 0, 1, []))
    reply = await c.rpc(Tcreate(3, 1, 'new', 0o644, ORDWR))
    assert isinstance(reply, Rcreate) and reply.iounit == 8192 - 24
    assert await c.rpc(Twrite(4, 1, 0, b'abc')) == Rwrite(4, 3)
    assert fs.root.children['new'].data == b'abc'


@serving
async def test_clunk_forgets_the_fid(fs, srv, port):
    c = await Client.tcp(port)
    await c.attach()
    assert await c.rpc(Tclunk(2, 0)) == Rclunk(2)
    assert await c.rpc(Tclunk(3, 0)) == Rerror(3, E.EUNKNOWNFID)
    assert fs.clunked == ['/']


@serving
async def test_remove_clunks_the_fid_whether_or_not_it_succeeds(fs, srv, port):
    fs.mkfile('/d/f')
    c = await Client.tcp(port)
    await c.attach()
    await c.rpc(Twalk(2, 0, 1, ['d']))
    assert await c.rpc(Tremove(3, 1)) == Rerror(3, 'directory not empty')
    assert await c.rpc(Tstat(4, 1)) == Rerror(4, E.EUNKNOWNFID)
    await c.rpc(Twalk(5, 0, 2, ['d', 'f']))
    assert await c.rpc(Tremove(6, 2)) == Rremove(6)
    assert 'f' not in fs.root.children['d'].children
    # 'd' twice: the failed remove's fid, then the file the walk d/f passed through, which
    # the server lets go at once (a walk keeps only where it ends)
    assert fs.clunked == ['d', 'd', 'f']


@serving
async def test_wstat_passes_the_decoded_stat_and_may_complete_later(fs, srv, port):
    c = await Client.tcp(port)
    await c.attach()
    st = Stat(type=0xFFFF, dev=0xFFFFFFFF, qid=Qid(0xFF, 0xFFFFFFFF, 2**64 - 1),
              mode=0xFFFFFFFF, atime=0xFFFFFFFF, mtime=0xFFFFFFFF, length=2**64 - 1)
    assert await c.rpc(Twstat(2, 0, st)) == Rwstat(2)
    assert fs.wstats == [('/', st)]


@serving
async def test_async_write_is_answered_when_it_completes(fs, srv, port):
    fs.mkfile('/asyncwrite')
    c = await Client.tcp(port)
    await c.attach()
    await c.rpc(Twalk(2, 0, 1, ['asyncwrite']))
    await c.rpc(Topen(3, 1, OWRITE))
    assert await c.rpc(Twrite(4, 1, 0, b'later')) == Rwrite(4, 5)


# -- directory reads ----------------------------------------------------------------------

def entries(data):
    """The stat entries in a directory read; fails if one is split."""
    out, off = [], 0
    while off < len(data):
        st, off = unpack_stat(data, off)
        out.append(st)
    assert off == len(data)
    return out


async def opendir(c, path, fid=1):
    await c.rpc(Twalk(2, 0, fid, [p for p in path.split('/') if p]))
    assert isinstance(await c.rpc(Topen(3, fid, OREAD)), Ropen)


@serving
async def test_directory_read_never_splits_an_entry(fs, srv, port):
    for i in range(20):
        fs.mkfile('/d/file%02d' % i)
    c = await Client.tcp(port)
    await c.attach()
    await opendir(c, 'd')
    names, offset = [], 0
    while True:
        data = (await c.rpc(Tread(4, 1, offset, 150))).data
        if not data:
            break
        assert len(data) <= 150
        names += [st.name for st in entries(data)]
        offset += len(data)
    assert names == ['file%02d' % i for i in range(20)]


@serving
async def test_directory_read_at_offset_0_restarts(fs, srv, port):
    for name in 'abc':
        fs.mkfile('/d/' + name)
    c = await Client.tcp(port)
    await c.attach()
    await opendir(c, 'd')
    first = (await c.rpc(Tread(4, 1, 0, 8000))).data
    assert [st.name for st in entries(first)] == ['a', 'b', 'c']
    assert (await c.rpc(Tread(5, 1, len(first), 8000))).data == b''
    assert (await c.rpc(Tread(6, 1, 0, 8000))).data == first


@serving
async def test_directory_read_at_any_other_offset_must_continue_the_last(fs, srv, port):
    for name in 'abc':
        fs.mkfile('/d/' + name)
    c = await Client.tcp(port)
    await c.attach()
    await opendir(c, 'd')
    data = (await c.rpc(Tread(4, 1, 0, 100))).data
    assert len(entries(data)) == 1
    assert await c.rpc(Tread(5, 1, len(data) + 1, 100)) == Rerror(5, E.EBADOFFSET)
    assert await c.rpc(Tread(6, 1, 1, 100)) == Rerror(6, E.EBADOFFSET)
    assert [st.name for st in entries((await c.rpc(Tread(7, 1, len(data), 100))).data)] == ['b']


@serving
async def test_directory_entry_larger_than_count_is_an_error_and_is_kept(fs, srv, port):
    fs.mkfile('/d/' + 'long' * 20)
    c = await Client.tcp(port)
    await c.attach()
    await opendir(c, 'd')
    assert await c.rpc(Tread(4, 1, 0, 40)) == Rerror(4, E.ESHORT)
    assert [st.name for st in entries((await c.rpc(Tread(5, 1, 0, 500))).data)] == ['long' * 20]


@serving
async def test_directory_of_10000_entries_is_read_fully_with_small_counts(fs, srv, port):
    d = fs.mkdir('/big')
    for i in range(10000):
        d.children['f%05d' % i] = Node('f%05d' % i, d, False)
    c = await Client.tcp(port)
    await c.attach()
    await opendir(c, 'big')
    names, offset, reads = [], 0, 0
    while True:
        data = (await c.rpc(Tread(4, 1, offset, 200))).data
        if not data:
            break
        names += [st.name for st in entries(data)]
        offset += len(data)
        reads += 1
    assert names == sorted(d.children) and reads > 3000


# -- concurrency and flush ----------------------------------------------------------------

async def open_slow(fs, c, name, fid):
    fs.mkfile('/' + name, b'slow data')
    await c.rpc(Twalk(2, 0, fid, [name]))
    await c.rpc(Topen(3, fid, OREAD))


@serving
async def test_requests_are_answered_while_a_slow_read_waits(fs, srv, port):
    c = await Client.tcp(port)
    await c.attach()
    await open_slow(fs, c, 'slow', 1)
    c.send(Tread(10, 1, 0, 100))
    for tag in range(11, 21):
        assert isinstance(await c.rpc(Tstat(tag, 0)), Rstat)
    fs.gate('slow').set()
    assert await c.recv() == Rread(10, b'slow data')


@serving
async def test_replies_go_out_in_completion_order(fs, srv, port):
    c = await Client.tcp(port)
    await c.attach()
    await open_slow(fs, c, 'slow1', 1)
    await open_slow(fs, c, 'slow2', 2)
    c.send(Tread(10, 1, 0, 4))
    c.send(Tread(11, 2, 0, 4))
    await asyncio.sleep(0.02)
    fs.gate('slow2').set()
    assert (await c.recv()).tag == 11
    fs.gate('slow1').set()
    assert (await c.recv()).tag == 10


@serving
async def test_async_backend_error_is_answered_rerror(fs, srv, port):
    c = await Client.tcp(port)
    await c.attach()
    await open_slow(fs, c, 'slowfail', 1)
    fs.gate('slowfail').set()
    assert await c.rpc(Tread(10, 1, 0, 4)) == Rerror(10, 'slow failure')


@serving
async def test_flush_of_a_pending_request_answers_rflush_and_the_request_never(fs, srv, port):
    c = await Client.tcp(port)
    await c.attach()
    await open_slow(fs, c, 'slow', 1)
    c.send(Tread(10, 1, 0, 100))
    await asyncio.sleep(0.02)
    assert await c.rpc(Tflush(11, 10)) == Rflush(11)
    fs.gate('slow').set()
    await asyncio.sleep(0.02)
    assert await c.rpc(Tclunk(12, 1)) == Rclunk(12)     # the next reply: no Rread for tag 10
    assert await c.rpc(Tread(10, 0, 0, 1)) == Rerror(10, 'fid not open')   # tag 10 is free


@serving
async def test_flush_sent_with_its_request_suppresses_the_reply(fs, srv, port):
    c = await Client.tcp(port)
    await c.attach()
    await open_slow(fs, c, 'slow', 1)
    c.send_raw(encode(Tread(10, 1, 0, 100)) + encode(Tflush(11, 10)))
    assert await c.recv() == Rflush(11)
    fs.gate('slow').set()
    await asyncio.sleep(0.02)
    assert await c.rpc(Tstat(12, 1)) == Rstat(12, fs.stat_of(fs.root.children['slow']))


@serving
async def test_flush_of_an_answered_request_just_answers_rflush(fs, srv, port):
    c = await Client.tcp(port)
    await c.attach()
    await c.rpc(Tstat(5, 0))
    assert await c.rpc(Tflush(6, 5)) == Rflush(6)


@serving
async def test_duplicate_tag_in_flight_is_refused(fs, srv, port):
    c = await Client.tcp(port)
    await c.attach()
    await open_slow(fs, c, 'slow', 1)
    c.send(Tread(10, 1, 0, 100))
    assert await c.rpc(Tstat(10, 0)) == Rerror(10, E.ETAGINUSE)
    fs.gate('slow').set()
    assert await c.recv() == Rread(10, b'slow data')


@serving(max_tags=2)
async def test_too_many_requests_in_flight_are_refused(fs, srv, port):
    c = await Client.tcp(port)
    await c.attach()
    await open_slow(fs, c, 'slow', 1)
    c.send(Tread(10, 1, 0, 100))
    c.send(Tread(11, 1, 0, 100))
    assert await c.rpc(Tstat(12, 0)) == Rerror(12, E.ETOOMANYTAGS)
    fs.gate('slow').set()
    assert {(await c.recv()).tag, (await c.recv()).tag} == {10, 11}
    assert isinstance(await c.rpc(Tstat(12, 0)), Rstat)


@serving(max_fids=3)
async def test_fids_per_connection_are_bounded(fs, srv, port):
    c = await Client.tcp(port)
    await c.attach()
    await c.rpc(Twalk(2, 0, 1, []))
    await c.rpc(Twalk(2, 0, 2, []))
    assert await c.rpc(Twalk(2, 0, 3, [])) == Rerror(2, E.ETOOMANYFIDS)
    await c.rpc(Tclunk(3, 2))
    assert await c.rpc(Twalk(2, 0, 3, [])) == Rwalk(2, ())


# -- malformed input ----------------------------------------------------------------------

def raw_frame(mtype, tag, body):
    return struct.pack('<IBH', 7 + len(body), mtype, tag) + body


@serving
async def test_body_too_short_for_its_type_gets_rerror(fs, srv, port):
    c = await Client.tcp(port)
    await c.attach()
    c.send_raw(raw_frame(Tread.type, 7, b'\x00\x00'))
    reply = await c.recv()
    assert isinstance(reply, Rerror) and reply.tag == 7
    assert isinstance(await c.rpc(Tstat(8, 0)), Rstat)


@serving
async def test_frame_larger_than_msize_closes_only_that_connection(fs, srv, port):
    c = await Client.tcp(port)
    await c.attach(msize=8192)
    c.send(Twrite(5, 0, 0, bytes(9000)))
    assert await c.closed_by_server()
    assert await still_serves(port)


@pytest.mark.parametrize('size', [0, 3, 6])
def test_frame_size_below_7_closes_the_connection(size):
    @serving
    async def check(fs, srv, port):
        c = await Client.tcp(port)
        c.send_raw(struct.pack('<IBH', size, 100, 0))
        assert await c.closed_by_server()
        assert await still_serves(port)
    check()


@serving
async def test_bad_string_length_gets_rerror(fs, srv, port):
    c = await Client.tcp(port)
    await c.version()
    body = struct.pack('<IIH', 0, NOFID, 300) + b'glenda' + struct.pack('<H', 0)
    c.send_raw(raw_frame(Tattach.type, 4, body))
    reply = await c.recv()
    assert isinstance(reply, Rerror) and reply.tag == 4
    assert await still_serves(port)


@serving
async def test_unknown_type_gets_rerror_with_its_tag(fs, srv, port):
    c = await Client.tcp(port)
    await c.version()
    c.send_raw(raw_frame(99, 0x4242, b'junk'))
    reply = await c.recv()
    assert isinstance(reply, Rerror) and reply.tag == 0x4242
    c.send(Rversion(5, 8192, '9P2000'))            # an R-message is not a request
    assert await c.recv() == Rerror(5, E.EBADTYPE)
    assert await still_serves(port)


@serving
async def test_invalid_utf8_gets_rerror(fs, srv, port):
    c = await Client.tcp(port)
    await c.attach()
    body = struct.pack('<IIH', 0, 1, 1) + struct.pack('<H', 2) + b'\xff\xfe'
    c.send_raw(raw_frame(Twalk.type, 6, body))
    reply = await c.recv()
    assert isinstance(reply, Rerror) and reply.tag == 6


@serving
async def test_truncated_stream_then_close_leaves_the_server_serving(fs, srv, port):
    c = await Client.tcp(port)
    await c.attach()
    c.send_raw(encode(Tstat(3, 0))[:-2])
    await c.writer.drain()
    c.close()
    await asyncio.sleep(0.02)
    assert await still_serves(port)
    assert fs.clunked == ['/']


@serving(max_ahead=3 << 20)
async def test_large_frames_announced_and_not_sent_hold_at_most_max_ahead(fs, srv, port):
    # 6 connections announce a 1 MiB + 24 frame and send its first 200 bytes in two pieces:
    # the second is received into the frame's whole buffer for as many as max_ahead (3 MiB)
    # allows, the others wait for a quarter of their frame.  When they hang up, all of it comes back, and a 1 MiB Twrite sent
    # afterwards is served whole.
    msize = (1 << 20) + 24
    frame = encode(Twrite(5, 0, 0, bytes(1 << 20)))
    cs = []
    for _ in range(6):
        c = await Client.tcp(port)
        await c.attach(msize=msize)
        c.send_raw(frame[:100])
        await c.writer.drain()
        await asyncio.sleep(0.01)
        c.send_raw(frame[100:200])
        await c.writer.drain()
        cs.append(c)
    for _ in range(100):
        if srv.ahead.used >= 3 * (len(frame) - 100):
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)
    assert srv.ahead.used == 3 * (len(frame) - 100) <= srv.ahead.limit
    for c in cs:
        c.close()
    for _ in range(100):
        if srv.ahead.used == 0:
            break
        await asyncio.sleep(0.01)
    assert srv.ahead.used == 0
    payload = bytes(range(256)) * 4096
    fs.mkfile('/big', b'')
    c = await Client.tcp(port)
    await c.attach(msize=msize)
    await c.rpc(Twalk(2, 0, 1, ['big']))
    await c.rpc(Topen(3, 1, ORDWR))
    assert await c.rpc(Twrite(4, 1, 0, payload)) == Rwrite(4, len(payload))
    assert fs.root.children['big'].data == payload and srv.ahead.used == 0


@serving
async def test_garbage_stream_cannot_stop_the_server(fs, srv, port):
    import random
    rnd = random.Random(1234)
    for _ in range(20):
        c = await Client.tcp(port)
        await c.version()
        c.send_raw(bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 300))))
        await c.writer.drain()
        c.close()
    await asyncio.sleep(0.05)
    assert await still_serves(port)


# -- Unix sockets ---------------------------------------------------------------------------

def unix_serving(test):
    @named_like(test)
    def run(tmp_path):
        async def main():
            fs = FakeFs()
            srv = Server(fs)
            path = str(tmp_path / 'creepy.sock')
            await srv.listen_unix(path)
            try:
                await asyncio.wait_for(test(fs, srv, path), TIMEOUT)
            finally:
                await close_clients()
                await srv.close()
            assert not os.path.exists(path)
        asyncio.run(main())
    return run


@unix_serving
async def test_unix_socket_peer_has_peercred_and_addr(fs, srv, path):
    c = await Client.unix(path)
    assert isinstance(await c.attach(), Rattach)
    (peer,) = srv.peers
    assert peer.cred == (os.getpid(), os.getuid(), os.getgid())
    assert peer.addr == 'unix!' + path and peer.transport == 'unix'
    assert statmod.S_IMODE(os.stat(path).st_mode) == 0o600


@unix_serving
async def test_listening_on_a_live_unix_socket_is_refused(fs, srv, path):
    with pytest.raises(OSError):
        await Server(FakeFs()).listen_unix(path)
    assert await Client.unix(path)


def test_a_stale_unix_socket_is_replaced_and_a_regular_file_is_not(tmp_path):
    stale = str(tmp_path / 'stale.sock')
    s = socket.socket(socket.AF_UNIX)
    s.bind(stale)
    s.close()
    regular = tmp_path / 'file'
    regular.write_text('keep me')

    async def main():
        srv = Server(FakeFs())
        await srv.listen_unix(stale)
        c = await Client.unix(stale)
        assert isinstance(await c.attach(), Rattach)
        with pytest.raises(FileExistsError):
            await srv.listen_unix(str(regular))
        await close_clients()
        await srv.close()
    asyncio.run(main())
    assert regular.read_text() == 'keep me'


# -- what a connection may cost ---------------------------------------------------------

def conn_of(srv):
    """The server side of the only live connection."""
    (conn,) = srv._conns
    return conn


async def slow_reader(port, msize):
    """A raw socket with little room in the kernel for replies, attached at msize, fid 1
    open for reading on /big (the caller makes it); (socket, loop).  Its greeting's replies
    take 19 + 20 + 22 + 24 bytes."""
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)     # little room in the kernel
    raw.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(raw, ('127.0.0.1', port))
    await loop.sock_sendall(raw, encode(Tversion(NOTAG, msize, '9P2000'))
                            + encode(Tattach(1, 0, NOFID, 'g', ''))
                            + encode(Twalk(2, 0, 1, ['big'])) + encode(Topen(3, 1, OREAD)))
    return raw, loop


@serving(max_unsent=256 << 10)
async def test_a_client_that_reads_no_replies_gets_no_more_requests_handled(fs, srv, port):
    # 200 Treads of 64 KiB on a connection whose client never reads: the server handles
    # them only until 256 KiB (max_unsent) wait in its buffer, keeps the rest of the frames
    # unread, and serves everyone else meanwhile.  When the client reads, the rest are
    # answered.  (With max_unsent at its default of 8 MiB, 1 MiB reads behave the same.)
    fs.mkfile('/big', bytes(range(256)) * 256)
    raw, loop = await slow_reader(port, 8192 + 65536)
    await asyncio.sleep(0.2)
    reads = b''.join(encode(Tread(10 + i, 1, 0, 65536)) for i in range(200))
    await loop.sock_sendall(raw, reads)
    await asyncio.sleep(0.5)
    conn = conn_of(srv)
    handled = srv.stats['Tread'][0]
    assert handled < 60, handled
    assert conn.held and conn.session.framer.pending() > 0
    assert conn.transport.get_write_buffer_size() <= (256 << 10) + 2 * 65536
    assert await still_serves(port)             # others are served meanwhile
    # Now read everything: every request is answered, in full.
    want = 19 + 20 + 22 + 24 + 200 * (11 + 65536)
    got = bytearray()
    while len(got) < want:
        data = await asyncio.wait_for(loop.sock_recv(raw, 1 << 20), TIMEOUT)
        assert data, 'the server hung up'
        got += data
    framer = codec.Framer(1 << 30)
    framer.feed(got)
    replies = [decode(f) for f in framer.frames()]
    assert [type(r) for r in replies[:4]] == [Rversion, Rattach, Rwalk, Ropen]
    assert all(r == Rread(r.tag, bytes(range(256)) * 256) for r in replies[4:])
    assert sorted(r.tag for r in replies[4:]) == list(range(10, 210))
    assert srv.stats['Tread'][0] == 200 and not conn.held
    raw.close()


async def slow_writer(fs, port):
    """A client (msize 64 KiB + 8 KiB) with fid 1 open for writing on /slowfile, whose writes
    wait for fs.gate('slowfile')."""
    fs.mkfile('/slowfile')
    c = await Client.tcp(port)
    await c.attach(msize=8192 + 65536)
    await c.rpc(Twalk(2, 0, 1, ['slowfile']))
    await c.rpc(Topen(3, 1, OWRITE))
    return c


@serving(max_pending=256 << 10)
async def test_requests_waiting_in_flight_hold_the_rest_of_their_connection(fs, srv, port):
    # 100 Twrites of 64 KiB to a file whose writes wait (as writes wait for a freeze, or
    # console lines for the console): the server takes them only until their frames pass
    # 256 KiB (max_pending), keeps the rest unread, and serves everyone else meanwhile.  When
    # the writes go through, the rest are handled, and every one is answered.
    c = await slow_writer(fs, port)
    piece = bytes(range(256)) * 256
    for i in range(100):
        c.send(Twrite(10 + i, 1, i * len(piece), piece))
    await asyncio.sleep(0.5)
    conn = conn_of(srv)
    handled = srv.stats['Twrite'][0]
    assert handled < 20, handled
    assert conn.held and conn.session.pending_bytes <= (256 << 10) + 65536 + 64
    assert await still_serves(port)
    fs.gate('slowfile').set()
    replies = [await c.recv() for _ in range(100)]
    assert sorted(r.tag for r in replies) == list(range(10, 110))
    assert all(r == Rwrite(r.tag, len(piece)) for r in replies)
    assert fs.root.children['slowfile'].data == piece * 100
    assert srv.stats['Twrite'][0] == 100 and not conn.held
    assert conn.session.pending_bytes == 0


@serving(max_pending=256 << 10)
async def test_flushed_and_aborted_requests_stop_counting_as_pending(fs, srv, port):
    c = await slow_writer(fs, port)
    for i in range(3):
        c.send(Twrite(10 + i, 1, 0, bytes(1000)))
    assert await c.rpc(Tflush(20, 11)) == Rflush(20)
    session = conn_of(srv).session
    assert session.pending_bytes == 2 * len(encode(Twrite(10, 1, 0, bytes(1000))))
    assert isinstance(await c.rpc(Tversion(NOTAG, 8192, '9P2000')), Rversion)
    assert session.pending_bytes == 0


@serving
async def test_replies_below_max_unsent_do_not_stop_the_requests_behind_them(fs, srv, port):
    # Eight 1 MiB reads in flight leave 8 MiB of replies waiting as a matter of course (the
    # client reads them as fast as the kernel lets it): every request is read and handled
    # while they wait; at the transport's default 64 KiB limit reading would stop after the
    # first reply, and the client's pipeline would become a ping-pong.
    fs.mkfile('/big', bytes(range(256)) * 4096)
    raw, loop = await slow_reader(port, (1 << 20) + 24)
    for i in range(7):                          # one at a time: each its own read
        await asyncio.sleep(0.05)
        await loop.sock_sendall(raw, encode(Tread(10 + i, 1, 0, 1 << 20)))
    await asyncio.sleep(0.3)
    assert srv.stats['Tread'][0] == 7
    assert not conn_of(srv).held
    want = 19 + 20 + 22 + 24 + 7 * (11 + (1 << 20))
    got = 0
    while got < want:
        data = await asyncio.wait_for(loop.sock_recv(raw, 1 << 20), TIMEOUT)
        assert data, 'the server hung up'
        got += len(data)
    raw.close()


@serving
async def test_a_large_frame_before_tversion_closes_the_connection(fs, srv, port):
    # Five bytes announcing a 1 MiB frame: nobody agreed to frames that large yet.
    c = await Client.tcp(port)
    c.send_raw(struct.pack('<I', 1 << 20) + b'x')
    assert await c.closed_by_server()
    assert await still_serves(port)
    # Before Tversion the connection holds a buffer of a few KiB, not one the size of msize.
    c = await Client.tcp(port)
    c.send_raw(struct.pack('<IBH', 5000, 100, 0))
    await asyncio.sleep(0.05)
    assert len(conn_of(srv).session.framer._buf) <= 2 * ninep_server.PRE_VERSION_FRAME


@serving
async def test_a_large_frame_sent_slowly_costs_what_has_arrived(fs, srv, port):
    # After a Tversion of msize 1 MiB a frame that large is allowed; one announced and then
    # sent a few bytes at a time must not make the connection hold a megabyte for it.
    c = await Client.tcp(port)
    assert isinstance(await c.version(1 << 20), Rversion)
    c.send_raw(struct.pack('<I', 1 << 20) + b'x')
    for _ in range(20):
        await asyncio.sleep(0.01)
        c.send_raw(b'y')
    await asyncio.sleep(0.05)
    session = conn_of(srv).session
    assert session.framer.pending() == 25
    assert len(session.framer._buf) <= 4 * codec.Framer.READ_SIZE
    assert await still_serves(port)


@serving(max_conns=2)
async def test_connections_past_the_cap_are_refused_with_an_error(fs, srv, port):
    a = await Client.tcp(port)
    b = await Client.tcp(port)
    assert isinstance(await a.attach(), Rattach) and isinstance(await b.attach(), Rattach)
    c = await Client.tcp(port)
    reply = await c.recv()
    assert reply == Rerror(NOTAG, E.ETOOMANYCONNS)
    assert await c.closed_by_server()
    assert len(srv.peers) == 2
    a.close()
    await a.writer.wait_closed()
    for _ in range(100):                        # the server notices the hang-up
        if len(srv.peers) < 2:
            break
        await asyncio.sleep(0.01)
    d = await Client.tcp(port)
    assert isinstance(await d.attach(), Rattach)


# -- server life --------------------------------------------------------------------------

@serving
async def test_stats_count_each_t_message(fs, srv, port):
    c = await Client.tcp(port)
    await c.attach()
    for tag in range(5):
        await c.rpc(Tstat(tag, 0))
    assert srv.stats['Tstat'][0] == 5 and srv.stats['Tattach'][0] == 1
    # the first request of each type is among the timed ones (one in TIME_EVERY)
    assert srv.stats['Tstat'][1] > 0 and srv.stats['Tstat'][2] == 1
    assert srv.stats['Tread'] == [0, 0.0, 0]
    srv.clear_stats()
    await c.rpc(Tstat(9, 0))
    assert srv.stats['Tstat'][0] == 1 and srv.stats['Tattach'] == [0, 0.0, 0]


def test_close_clunks_fids_and_disconnects_every_peer():
    async def main():
        fs = FakeFs()
        srv = Server(fs)
        port = (await srv.listen_tcp('127.0.0.1', 0)).sockets[0].getsockname()[1]
        clients = [await Client.tcp(port) for _ in range(3)]
        for c in clients:
            await c.attach()
        await srv.close()
        assert fs.clunked == ['/'] * 3 and len(fs.disconnected) == 3 and not srv.peers
        for c in clients:
            assert await c.closed_by_server()
        await close_clients()
    asyncio.run(main())


# -- any sequence of requests -------------------------------------------------------------
small = st.integers(0, 5)
wname = st.sampled_from(['a', 'b', 'f', '..', '.', '', 'x/y', 'nothere'])
requests = st.one_of(
    st.builds(Tversion, st.just(NOTAG), st.sampled_from([100, 256, 8192, 1 << 30]),
              st.sampled_from(['9P2000', '9P2000.L', 'junk'])),
    st.builds(Tauth, small, small, st.just('glenda'), st.just('')),
    st.builds(Tattach, small, small, st.sampled_from([NOFID, 1]), st.just('glenda'),
              st.sampled_from(['', 'main', 'nosuch', 'crash'])),
    st.builds(Tflush, small, small),
    st.builds(Twalk, small, small, small, st.lists(wname, max_size=4)),
    st.builds(Topen, small, small, st.sampled_from([OREAD, OWRITE, ORDWR, 3, 0x10 | ORDWR])),
    st.builds(Tcreate, small, small, st.sampled_from(['n', 'a', '..', 'x/y']),
              st.sampled_from([0o644, DMDIR | 0o755]), st.sampled_from([OREAD, ORDWR])),
    st.builds(Tread, small, small, st.sampled_from([0, 1, 100, 2**63]), st.integers(0, 10000)),
    st.builds(Twrite, small, small, st.sampled_from([0, 5]), st.binary(max_size=20)),
    st.builds(Tclunk, small, small), st.builds(Tremove, small, small),
    st.builds(Tstat, small, small), st.builds(Twstat, small, small, st.just(Stat())),
)


class RecordingTransport:
    """Stands in for a socket transport: keeps what the server writes."""

    def __init__(self):
        self.data = bytearray()
        self.closed = False

    def write(self, data):
        self.data += data

    def writelines(self, parts):
        for part in parts:
            self.data += part

    def set_write_buffer_limits(self, high=None, low=None):
        pass

    def get_write_buffer_size(self):
        return 0                # the peer reads everything at once

    def close(self):
        self.closed = True

    abort = close

    def get_extra_info(self, name, default=None):
        return ('127.0.0.1', 9) if name == 'peername' else default


def decode_any(frame):
    """A reply of either dialect (a 9P2000.L Tversion makes the errors Rlerror)."""
    try:
        return decode(frame)
    except codec.ProtocolError:
        return codec.NINEP2000L.decode(frame)


@given(st.lists(requests, max_size=40))
@settings(max_examples=150, deadline=None)
def test_any_request_sequence_gets_well_formed_replies_and_keeps_the_server_up(msgs):
    async def main():
        fs = FakeFs()
        fs.mkfile('/a/f', b'data')
        fs.mkfile('/b')
        srv = Server(fs)
        conn = ninep_server._Connection(srv, 'tcp', None)
        transport = RecordingTransport()
        conn.connection_made(transport)

        def feed(data):
            buf = conn.get_buffer(-1)
            buf[:len(data)] = data
            conn.buffer_updated(len(data))

        for m in msgs:
            feed(encode(m))
        await asyncio.sleep(0.01)       # let asynchronous replies (wstat) finish
        sent_tags = {m.tag for m in msgs}
        replies = []
        framer = codec.Framer(1 << 30)
        framer.feed(transport.data)
        for frame in framer.frames():
            replies.append(decode_any(frame))
        assert not transport.closed
        assert len(replies) <= len(msgs)
        assert all(r.tag in sent_tags for r in replies)
        # Still serving: a fresh session works after whatever came before.
        transport.data.clear()
        feed(encode(Tversion(NOTAG, 8192, '9P2000')) + encode(Tattach(1, 9, NOFID, 'g', '')))
        framer.feed(transport.data)
        assert [type(decode(f)) for f in framer.frames()] == [Rversion, Rattach]
        conn.connection_lost(None)
        assert not srv.peers and fs.disconnected
    asyncio.run(main())


def test_replies_go_out_in_groups_while_one_connection_is_busy_and_whole_when_several_are():
    # 16 requests arrive in one buffer.  While the loop's last pass found this connection
    # the only busy one, its replies are written every few (ninep.server._SPLIT), so that
    # the client can work on the first ones while the server makes the rest; once several
    # connections were busy in a pass, all 16 go in one write.
    async def main():
        fs = FakeFs()
        srv = Server(fs)
        conns = []
        for _ in range(2):
            conn = ninep_server._Connection(srv, 'tcp', None)
            transport = RecordingTransport()
            writes = []
            transport.write = lambda data, writes=writes, t=transport: (
                writes.append(len(data)), t.data.extend(data))
            conn.connection_made(transport)
            conns.append((conn, transport, writes))

        def feed(conn, data):
            buf = conn.get_buffer(-1)
            buf[:len(data)] = data
            conn.buffer_updated(len(data))

        def batch(tag0):
            return b''.join(encode(Tstat(tag0 + i, 0)) for i in range(16))

        for conn, _, _ in conns:
            feed(conn, encode(Tversion(NOTAG, 8192, '9P2000'))
                 + encode(Tattach(1, 0, NOFID, 'g', '')))
        await asyncio.sleep(0)              # a pass of the loop in which both were busy
        conn, transport, writes = conns[0]
        feed(conn, encode(Tstat(1, 0)))
        feed(conn, encode(Tstat(1, 0)))     # twice: it is still one connection
        await asyncio.sleep(0)              # and one in which only conn was
        writes.clear()
        feed(conn, batch(10))
        assert len(writes) == 16 // ninep_server._SPLIT > 1
        await asyncio.sleep(0)
        # both connections busy in one pass: the next pass writes each buffer's replies whole
        for c, _, _ in conns:
            feed(c, encode(Tstat(2, 0)))
        await asyncio.sleep(0)
        writes.clear()
        feed(conn, batch(30))
        assert len(writes) == 1
        framer = codec.Framer(1 << 20)
        framer.feed(transport.data)
        stats = [decode(f) for f in framer.frames()]
        assert [r.tag for r in stats if isinstance(r, Rstat)][-35:] == [
            1, 1, *range(10, 26), 2, *range(30, 46)]
        for c, _, _ in conns:
            c.connection_lost(None)
    asyncio.run(main())
