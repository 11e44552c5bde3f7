"""The 9P client against a fake 9P responder built on the codec (the real server is elsewhere).

The responder (``Fake``) serves a tree of dicts (directories) and bytearrays
(files) on a loopback port from its own thread and event loop.  It records
every message it gets, can hold replies and send them back in reverse order,
can cap writes (short writes), and never answers reads of files named in
``block`` unless they are flushed.
"""

import asyncio
import socket
import subprocess
import sys
import threading
import time

import pytest

from creepy.ninep import dial
from creepy.ninep.client import PROMPT, Client, Error9P, SyncClient, nochange
from creepy.ninep.codec import (
    DMAPPEND, DMDIR, IOHDRSZ, NOTAG, OREAD, OTRUNC, QTAPPEND, QTDIR, Framer, Qid, Rattach,
    Rclunk, Rcreate, Rerror, Rflush, Ropen, Rread, Rremove, Rstat, Rversion, Rwalk, Rwrite,
    Rwstat, Stat, Tattach, Tclunk, Tcreate, Tflush, Topen, Tread, Tremove, Tstat, Tversion,
    Twalk, Twrite, Twstat, decode, encode, pack_stat,
)

NOSUCH = "file does not exist"


class Fake:
    """A 9P2000 responder good enough to exercise the client."""

    def __init__(self, tree, *, msize=8192 + IOHDRSZ, iounit=0, hold=0, maxwrite=None,
                 version="9P2000", block=(), modes=None):
        self.tree = tree
        self.msize = msize
        self.iounit = iounit
        self.hold = hold  # hold this many replies, then send them newest first
        self.maxwrite = maxwrite  # answer a write with at most this count
        self.version = version
        self.block = set(block)  # reads of these names are never answered
        self.modes = modes or {}  # path tuple -> extra mode bits (DMAPPEND...)
        self.log = []  # every message received, in order
        self.outstanding = 0  # requests received and not answered
        self.max_outstanding = 0
        self.blocked = {}  # tag -> message, requests never answered
        self.console = PROMPT  # what /cons has to say (a start-up prompt is stale output)
        self.garbage_after = None  # answer the Nth request with garbage
        self._qids = {}
        self.conns = set()  # writers of the open connections
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.port = asyncio.run_coroutine_threadsafe(self._listen(), self.loop).result()
        self.addr = f"tcp!127.0.0.1!{self.port}"

    async def _listen(self):
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    def stop(self):
        async def down():
            self.server.close()
            for w in list(self.conns):
                w.close()
        asyncio.run_coroutine_threadsafe(down(), self.loop).result()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()

    def call(self, fn):
        """Run fn() on the responder's loop (to poke at it from the test)."""
        async def run():
            return fn()
        return asyncio.run_coroutine_threadsafe(run(), self.loop).result()

    # -- the connection ---------------------------------------------------

    async def _serve(self, reader, writer):
        self.conns.add(writer)
        fids = {}
        framer = Framer(self.msize)
        held = []
        timer = None

        def send_held():
            nonlocal timer
            timer = None
            for frame in reversed(held):
                writer.write(frame)
            self.outstanding -= len(held)
            held.clear()

        def answer(frame):
            nonlocal timer
            if self.hold:
                held.append(frame)
                if len(held) >= self.hold:
                    if timer:
                        timer.cancel()
                    send_held()
                elif timer is None:
                    timer = asyncio.get_running_loop().call_later(0.05, send_held)
            else:
                writer.write(frame)
                self.outstanding -= 1

        try:
            while data := await reader.read(1 << 16):
                framer.feed(data)
                for frame in framer.frames():
                    msg = decode(frame)
                    self.log.append(msg)
                    self.outstanding += 1
                    self.max_outstanding = max(self.max_outstanding, self.outstanding)
                    if self.garbage_after is not None and len(self.log) >= self.garbage_after:
                        writer.write(b"\x05\x00\x00\x00\x00")  # size 5: below any header
                        continue
                    reply = self._answer(fids, framer, msg)
                    if isinstance(reply, tuple):  # a Tflush: the flushed reply is dropped
                        self.outstanding -= 1
                        reply = reply[0]
                    if reply is not None:
                        answer(encode(reply))
        except ConnectionError:
            pass
        finally:
            self.conns.discard(writer)
            writer.close()

    # -- the tree ---------------------------------------------------------

    def _node(self, path):
        node = self.tree
        for name in path:
            if not isinstance(node, dict) or name not in node:
                return None
            node = node[name]
        return node

    def _qid(self, path):
        node = self._node(path)
        qpath = self._qids.setdefault(path, len(self._qids) + 1)
        qtype = QTDIR if isinstance(node, dict) else 0
        if self.modes.get(path, 0) & DMAPPEND:
            qtype |= QTAPPEND
        return Qid(qtype, 0, qpath)

    def _stat(self, path):
        node = self._node(path)
        isdir = isinstance(node, dict)
        mode = (DMDIR | 0o755 if isdir else 0o644) | self.modes.get(path, 0)
        return Stat(qid=self._qid(path), mode=mode, length=0 if isdir else len(node),
                    name=path[-1] if path else "/", uid="glenda", gid="glenda", muid="glenda")

    def _answer(self, fids, framer, m):
        t = m.tag
        if isinstance(m, Tversion):
            framer.msize = min(m.msize, self.msize)
            fids.clear()
            return Rversion(t, framer.msize, self.version)
        if isinstance(m, Tflush):
            old = self.blocked.pop(m.oldtag, None)
            return (Rflush(t),) if old is not None else Rflush(t)
        if isinstance(m, Tattach):
            fids[m.fid] = ()
            return Rattach(t, self._qid(()))
        fid = getattr(m, "fid", None)
        if fid not in fids:
            return Rerror(t, "unknown fid")
        path = fids[fid]
        node = self._node(path)
        if isinstance(m, Twalk):
            qids = []
            p = path
            for name in m.wnames:
                if self._node(p + (name,)) is None:
                    break
                p = p + (name,)
                qids.append(self._qid(p))
            if not qids and m.wnames:
                return Rerror(t, NOSUCH)
            if len(qids) == len(m.wnames):
                fids[m.newfid] = p
            return Rwalk(t, qids)
        if isinstance(m, Topen):
            if m.mode & OTRUNC and isinstance(node, bytearray):
                del node[:]
            return Ropen(t, self._qid(path), self.iounit)
        if isinstance(m, Tcreate):
            if m.name in node:
                return Rerror(t, "file already exists")
            node[m.name] = {} if m.perm & DMDIR else bytearray()
            fids[fid] = path + (m.name,)
            return Rcreate(t, self._qid(fids[fid]), self.iounit)
        if isinstance(m, Tread):
            if path and path[-1] in self.block:
                self.blocked[t] = m
                return None
            if path == ("cons",):
                out, self.console = self.console, ""
                return Rread(t, out.encode()[:m.count])
            if isinstance(node, dict):
                data = b"".join(pack_stat(self._stat(path + (n,))) for n in sorted(node))
                return Rread(t, data[m.offset:m.offset + m.count])
            return Rread(t, bytes(node[m.offset:m.offset + m.count]))
        if isinstance(m, Twrite):
            data = m.data[:self.maxwrite] if self.maxwrite is not None else m.data
            if path == ("cons",):
                line = data.decode()
                self.console += line + f"ran {line.strip()!r}\n" + PROMPT
                return Rwrite(t, len(data))
            off = len(node) if self.modes.get(path, 0) & DMAPPEND else m.offset
            if off > len(node):
                node.extend(bytes(off - len(node)))
            node[off:off + len(data)] = data
            return Rwrite(t, len(data))
        if isinstance(m, Tclunk):
            del fids[fid]
            return Rclunk(t)
        if isinstance(m, Tremove):
            del fids[fid]
            if isinstance(node, dict) and node:
                return Rerror(t, "directory not empty")
            del self._node(path[:-1])[path[-1]]
            return Rremove(t)
        if isinstance(m, Tstat):
            return Rstat(t, self._stat(path))
        if isinstance(m, Twstat):
            st = m.stat
            if st.length != 0xFFFFFFFFFFFFFFFF:
                del node[st.length:]
            if st.mode != 0xFFFFFFFF:
                self.modes[path] = st.mode & ~(DMDIR | 0o777)
            if st.name:
                parent = self._node(path[:-1])
                parent[st.name] = parent.pop(path[-1])
                fids[fid] = path[:-1] + (st.name,)
            return Rwstat(t)
        return Rerror(t, "unexpected message")

    def sent(self, cls):
        return [m for m in self.log if isinstance(m, cls)]


def tree():
    return {
        "lib": {"a": bytearray(b"alpha"), "b": bytearray(b"beta")},
        "empty": {},
        "hello": bytearray(b"hello, world\n"),
        "slow": bytearray(b"never read"),
        "cons": bytearray(),
    }


@pytest.fixture
def fake():
    servers = []

    def make(**kwargs):
        s = Fake(tree(), **kwargs)
        servers.append(s)
        return s
    yield make
    for s in servers:
        s.stop()


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 20))


def test_connect_negotiates_msize_and_attaches(fake):
    f = fake(msize=8192 + IOHDRSZ)

    async def main():
        async with await Client.connect(f.addr, aname="main") as c:
            assert c.msize == 8192 + IOHDRSZ
            assert c.root_qid.type == QTDIR
    run(main())
    v, a = f.log[0], f.log[1]
    assert isinstance(v, Tversion) and v.tag == NOTAG and v.version == "9P2000"
    assert v.msize == (1 << 20) + IOHDRSZ
    assert isinstance(a, Tattach) and a.uname == dial.getuser() and a.aname == "main"


def test_connect_refuses_a_server_speaking_another_version(fake):
    f = fake(version="unknown")
    with pytest.raises(ConnectionError, match="unknown"):
        run(Client.connect(f.addr))


def test_path_helpers_round_trip(fake):
    f = fake()

    async def main():
        async with await Client.connect(f.addr) as c:
            assert await c.read_file("hello") == b"hello, world\n"
            assert await c.read_file("/lib//a") == b"alpha"
            await c.write_file("lib/new", b"fresh")
            assert await c.read_file("lib/new") == b"fresh"
            await c.write_file("lib/new", b"xy")  # truncates
            assert await c.read_file("lib/new") == b"xy"
            await c.write_file("lib/new", b"Z", trunc=False)
            assert await c.read_file("lib/new") == b"Zy"
            await c.append("lib/new", b"++")
            assert await c.read_file("lib/new") == b"Zy++"
            await c.mkdir("empty/sub")
            assert (await c.stat_path("empty/sub")).mode == DMDIR | 0o755
            names = [st.name for st in await c.listdir("lib")]
            assert names == ["a", "b", "new"]
            assert await c.listdir("empty/sub") == []
            st = await c.stat_path("hello")
            assert (st.name, st.length, st.uid) == ("hello", 13, "glenda")
            await c.remove_path("lib/new")
            assert [st.name for st in await c.listdir("lib")] == ["a", "b"]
    run(main())
    assert [m.perm for m in f.sent(Tcreate)] == [0o644, DMDIR | 0o755]


def test_path_helpers_walk_from_a_given_fid(fake):
    """With fid=, paths start at that fid's directory: each walk names only what is below
    it (a deep tree is walked once per directory), and the fid itself stays as it was."""
    f = fake()

    async def main():
        async with await Client.connect(f.addr) as c:
            lib = await c.walkpath("lib")
            mark = len(f.log)
            assert await c.read_file("a", fid=lib) == b"alpha"
            await c.write_file("new", b"fresh", fid=lib)
            await c.append("new", b"++", fid=lib)
            await c.mkdir("sub", fid=lib)
            await c.rename("new", "renamed", fid=lib)
            assert (await c.stat_path("renamed", fid=lib)).length == 7
            assert [st.name for st in await c.listdir(fid=lib)] == ["a", "b", "renamed", "sub"]
            await c.remove_path("renamed", fid=lib)
            walks = [m for m in f.log[mark:] if isinstance(m, Twalk)]
            assert {m.fid for m in walks} == {lib}
            assert {tuple(m.wnames) for m in walks} <= {(), ("a",), ("new",), ("renamed",)}
            assert [st.name for st in await c.listdir("lib")] == ["a", "b", "sub"]
            g = await c.walkpath("", lib)
            await c.open(g, OREAD)
            assert [st.name for st in await c.dirreadall(g)] == ["a", "b", "sub"]
            c.clunk_soon(g)                     # answered later; the number is free after
            c.clunk_soon(lib)
            while len(c._fids._used) > 1:       # (the attach fid stays)
                await asyncio.sleep(0.01)
            assert [m.fid for m in f.log if isinstance(m, Tclunk)][-2:] == [g, lib]
    run(main())


def test_listdir_reads_with_counts_of_msize_minus_24(fake):
    f = fake(msize=600)
    big = {f"file{i:03d}": bytearray() for i in range(40)}  # 40 entries, ~2 KiB of stats

    async def main():
        async with await Client.connect(f.addr) as c:
            f.call(lambda: f.tree.update(big=big))
            return await c.listdir("big")
    entries = run(main())
    assert [st.name for st in entries] == sorted(big)
    reads = f.sent(Tread)
    assert {r.count for r in reads} == {600 - 24}
    assert len(reads) > 3


def test_many_requests_in_flight_with_replies_in_reverse_order(fake):
    f = fake()
    names = [f"f{i}" for i in range(40)]

    async def main():
        async with await Client.connect(f.addr) as c:
            fids = []
            for n in names:
                await c.write_file(n, n.encode() * 3)
            for n in names:
                fid = await c.walkpath(n)
                await c.open(fid, OREAD)
                fids.append(fid)
            f.max_outstanding = 0
            f.hold = 40
            got = await asyncio.gather(*(c.read(fid, 0, 100) for fid in fids))
            assert got == [n.encode() * 3 for n in names]
            assert f.max_outstanding == 40
            assert len({m.tag for m in f.log[-40:]}) == 40
            # and the path helpers, interleaved
            got = await asyncio.gather(*(c.read_file(n) for n in names))
            assert got == [n.encode() * 3 for n in names]
    run(main())


def test_rerror_maps_to_error9p_and_frees_the_fid(fake):
    f = fake()

    async def main():
        async with await Client.connect(f.addr) as c:
            spare = c.alloc_fid()
            c.free_fid(spare)
            with pytest.raises(Error9P) as e:
                await c.stat_path("nope")
            assert e.value.ename == NOSUCH and str(e.value) == NOSUCH
            with pytest.raises(Error9P, match=NOSUCH):
                await c.read_file("lib/a/deeper")  # a partial walk: no Rerror from the server
            assert c.alloc_fid() == spare  # the fid numbers went back
            with pytest.raises(Error9P, match="file already exists"):
                await c.mkdir("lib")
            with pytest.raises(Error9P, match="directory not empty"):
                await c.remove_path("lib")
            assert (await c.stat_path("lib")).name == "lib"
            with pytest.raises(Error9P, match="unknown fid"):
                await c.stat(4242)
    run(main())


def test_walks_longer_than_16_names_go_in_steps(fake):
    f = fake()
    deep = "/".join(f"d{i}" for i in range(20))

    async def main():
        async with await Client.connect(f.addr) as c:
            p = ""
            for i in range(20):
                p = f"{p}/d{i}" if p else f"d{i}"
                await c.mkdir(p)
            await c.write_file(deep + "/leaf", b"down here")
            n = len(f.log)
            assert await c.read_file(deep + "/leaf") == b"down here"
            walks = [m for m in f.log[n:] if isinstance(m, Twalk)]
            assert [len(w.wnames) for w in walks] == [16, 5]
            assert walks[1].fid == walks[1].newfid == walks[0].newfid
            n = len(f.log)
            with pytest.raises(Error9P, match=NOSUCH):
                await c.stat_path(deep + "/nope")
            assert isinstance(f.log[-1], Tclunk)  # the half-walked fid was dropped
    run(main())


def test_writes_larger_than_iounit_are_split(fake):
    f = fake(iounit=1000)
    data = bytes(range(256)) * 18  # 4608 bytes

    async def main():
        async with await Client.connect(f.addr) as c:
            await c.write_file("big", data)
            assert await c.read_file("big") == data
            assert [r.count for r in f.sent(Tread)] == [1000] * 6
    run(main())
    writes = f.sent(Twrite)
    assert sorted((w.offset, len(w.data)) for w in writes) == [
        (0, 1000), (1000, 1000), (2000, 1000), (3000, 1000), (4000, 608)]


def test_without_an_iounit_writes_split_at_msize_minus_24(fake):
    f = fake(msize=1024 + IOHDRSZ)

    async def main():
        async with await Client.connect(f.addr) as c:
            await c.write_file("big", b"x" * 3000)
    run(main())
    assert sorted(len(w.data) for w in f.sent(Twrite)) == [952, 1024, 1024]


def test_a_short_write_ends_the_write(fake):
    f = fake(iounit=100, maxwrite=60)

    async def main():
        async with await Client.connect(f.addr) as c:
            fid = await c.walkpath("hello")
            await c.open(fid, OTRUNC | 1)
            assert await c.write(fid, 0, b"y" * 500) == 60
            with pytest.raises(Error9P, match="short write"):
                await c.write_file("lib/a", b"z" * 500)
    run(main())


def test_append_only_files_get_their_pieces_in_order_one_at_a_time(fake):
    f = fake(iounit=100, modes={("log",): DMAPPEND})
    f.tree["log"] = bytearray(b"start:")

    async def main():
        async with await Client.connect(f.addr) as c:
            fid = await c.walkpath("log")
            await c.open(fid, 1)
            f.max_outstanding = 0
            assert await c.write(fid, 0, bytes(range(250)) * 2) == 500
            assert f.max_outstanding == 1
            assert await c.read_file("log") == b"start:" + bytes(range(250)) * 2
    run(main())


def test_a_cancelled_request_is_flushed_and_its_tag_reused_after_rflush(fake):
    f = fake(block={"slow"})

    async def main():
        async with await Client.connect(f.addr) as c:
            fid = await c.walkpath("slow")
            await c.open(fid, OREAD)
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(c.read(fid, 0, 10), 0.2)
            tread = f.sent(Tread)[-1]
            for _ in range(100):
                if f.sent(Tflush):
                    break
                await asyncio.sleep(0.01)
            flush = f.sent(Tflush)
            assert len(flush) == 1 and flush[0].oldtag == tread.tag
            for _ in range(100):
                if not c._pending:
                    break
                await asyncio.sleep(0.01)
            assert not c._pending and not c._flushing
            assert await c.read_file("hello") == b"hello, world\n"
            assert tread.tag in {m.tag for m in f.log[-5:]}  # the tag came back into use
    run(main())


def test_flush_interrupts_a_waiting_request(fake):
    f = fake(block={"slow"})

    async def main():
        async with await Client.connect(f.addr) as c:
            fid = await c.walkpath("slow")
            await c.open(fid, OREAD)
            waiting = asyncio.ensure_future(c.read(fid, 0, 10))
            while not c.pending_tags():
                await asyncio.sleep(0.01)
            [tag] = c.pending_tags()
            await c.flush(tag)
            with pytest.raises(Error9P, match="interrupted"):
                await waiting
            assert c.pending_tags() == [] and not c._flushing
    run(main())


def test_losing_the_connection_fails_waiting_and_later_requests(fake):
    f = fake(block={"slow"})

    async def main():
        c = await Client.connect(f.addr)
        fid = await c.walkpath("slow")
        await c.open(fid, OREAD)
        waiting = asyncio.ensure_future(c.read(fid, 0, 10))
        await asyncio.sleep(0.1)
        f.call(lambda: [w.close() for w in f.conns])
        with pytest.raises(ConnectionError):
            await waiting
        with pytest.raises(ConnectionError):
            await c.stat_path("hello")
        await c.close()
    run(main())


def test_garbage_from_the_server_closes_the_connection(fake):
    f = fake()

    async def main():
        c = await Client.connect(f.addr)
        f.garbage_after = len(f.log) + 1
        with pytest.raises(ConnectionError, match="garbage"):
            await c.stat_path("hello")
        assert c.closed
        await c.close()
    run(main())


def test_wstat_helpers_touch_only_their_field(fake):
    f = fake()
    keep = nochange()

    async def main():
        async with await Client.connect(f.addr) as c:
            await c.rename("lib/a", "aa")
            assert await c.read_file("lib/aa") == b"alpha"
            await c.truncate("hello", 5)
            assert await c.read_file("hello") == b"hello"
            await c.chmod("lib", 0o700)
            await c.chmod("hello", DMAPPEND | 0o600)
            await c.sync_file("hello")
            with pytest.raises(ValueError):
                await c.rename("hello", "a/b")
    run(main())
    rename, trunc, chdir, chfile, sync = [m.stat for m in f.sent(Twstat)]

    def changed(st):
        return {k for k in Stat.__slots__ if getattr(st, k) != getattr(keep, k)}
    assert changed(rename) == {"name"} and rename.name == "aa"
    assert changed(trunc) == {"length"} and trunc.length == 5
    assert changed(chdir) == {"mode"} and chdir.mode == DMDIR | 0o700  # DMDIR kept
    assert chfile.mode == DMAPPEND | 0o600
    assert changed(sync) == set()
    assert keep.mode == keep.atime == keep.mtime == 0xFFFFFFFF
    assert keep.length == 0xFFFFFFFFFFFFFFFF and keep.name == keep.uid == ""


def test_cons_writes_a_command_and_returns_its_reply(fake):
    f = fake()

    async def main():
        async with await Client.connect(f.addr, aname="main") as c:
            assert await c.cons("users") == "ran 'users'\n"
            assert await c.cons("sync\n") == "ran 'sync'\n"
    run(main())
    assert [m.data for m in f.sent(Twrite)] == [b"users\n", b"sync\n"]


def test_cons_takes_another_attached_fid(fake):
    f = fake()

    async def main():
        async with await Client.connect(f.addr, aname="") as c:
            main_fid = c.alloc_fid()
            await c.attach(main_fid, "glenda", "main")
            assert await c.cons("who", fid=main_fid) == "ran 'who'\n"
            await c.clunk(main_fid)
    run(main())


def test_sync_client_offers_the_same_methods_blocking(fake):
    f = fake(iounit=700)
    with SyncClient(f.addr, timeout=10) as c:
        assert c.msize == 8192 + IOHDRSZ
        c.write_file("s", b"q" * 2000)
        assert c.read_file("s") == b"q" * 2000
        assert [st.name for st in c.listdir("")] == ["cons", "empty", "hello", "lib", "s", "slow"]
        fid = c.walkpath("lib/b")
        assert c.stat(fid).name == "b"
        c.clunk(fid)
        with pytest.raises(Error9P, match=NOSUCH):
            c.stat_path("nope")
    assert sorted(len(w.data) for w in f.sent(Twrite)) == [600, 700, 700]


def test_sync_client_reports_a_failed_dial():
    with pytest.raises(OSError):
        SyncClient("unix!/nonexistent/socket/for/creepy")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_interop_with_py9p_server(tmp_path):
    """An independent 9P server (py9p from p9fs, serving a local directory) as the peer."""
    pytest.importorskip("py9p")
    (tmp_path / "sub").mkdir()
    (tmp_path / "x").write_bytes(b"hi\n")
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "py9p", "-w", "-a", "127.0.0.1",
                               "-p", str(port), "-r", str(tmp_path)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                dial.connect_socket(f"tcp!127.0.0.1!{port}").close()
                break
            except OSError:
                time.sleep(0.05)
        with SyncClient(f"127.0.0.1:{port}", timeout=10) as c:
            assert c.read_file("x") == b"hi\n"
            c.write_file("big", b"z" * 100000)  # py9p offers msize 8192: 13 pieces
            c.append("big", b"tail")
            assert c.read_file("big") == b"z" * 100000 + b"tail"
            c.mkdir("sub/d")
            assert sorted(st.name for st in c.listdir("")) == ["big", "sub", "x"]
            assert [st.name for st in c.listdir("sub")] == ["d"]
            with pytest.raises(Error9P):
                c.stat_path("nope")
            c.remove_path("sub/d")
        assert (tmp_path / "big").stat().st_size == 100004
        assert not (tmp_path / "sub" / "d").exists()
    finally:
        server.kill()
        server.wait()
