"""Interop: the real server (creepy 9pix, a subprocess) driven over TCP and over its Unix socket
by the independent client (py9p, from p9fs) and by our own (creepy.ninep.client).

Every 9P2000 message type is exercised (version, auth, attach, flush, walk, open, create, read,
write, clunk, remove, stat, wstat), with Plan 9's semantics and error strings: permission
denials for a second user, rename keeping fids bound, truncation, ORCLOSE, DMEXCL, DMAPPEND,
perm masking on create, a wstat that changes nothing committing the tree, directory reads of
10,000 entries, and a flushed read of /cons.  Nothing here waits on a clock: a server is ready
when it says so, a blocked read is known to be outstanding because a later request on the same
connection was answered.
"""

import asyncio
import collections
import re

import pytest
from py9p import py9p

from creepy import errors as E
from creepy.fs.fs import unix_user
from creepy.ninep.client import Client, Error9P
from peers import (
    DMAPPEND, DMDIR, DMEXCL, OEXEC, OREAD, ORCLOSE, ORDWR, OTRUNC, OWRITE, QTAPPEND, QTDIR,
    QTEXCL, P9Error, connect,
)
from servers import Server9pix

OWNER = unix_user()          # formatted the disk: owns /root, member of adm
GLENDA = "glenda"
TRANSPORTS = ("tcp", "unix")
CLIENTS = ("py9p", "ours")

# Strings of the service layer (creepy/ninep/server.py); the tree's come from creepy.errors.
E_UNKNOWNFID = "unknown fid"
E_NOTOPEN = "fid not open"
E_OPEN = "fid already open"
E_NOTREAD = "fid not open for reading"
E_NOTWRITE = "fid not open for writing"
E_BADOFFSET = "bad offset in directory read"
E_TAUTH = "authentication by Tauth is not supported: use the Unix socket"

NOCHANGE32 = 0xFFFFFFFF


def errs(fn, *args, **kw):
    """The Plan 9 error string fn(*args) fails with (the test fails if it succeeds)."""
    with pytest.raises(P9Error) as ei:
        fn(*args, **kw)
    return ei.value.ename


# --- servers and clients --------------------------------------------------------------------

def _healthy(srv, mark):
    srv.check_alive()
    new = srv.stderr[mark:]
    assert "Traceback" not in new and "internal error" not in new, new


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with Server9pix(tmp_path_factory.mktemp("srv")) as s:
        s.start()
        yield s


@pytest.fixture(autouse=True)
def servers_stay_healthy(request):
    """After every test: the shared servers it used are alive and logged no traceback."""
    used = [request.getfixturevalue(n) for n in ("server", "users_server", "auth_server")
            if n in request.fixturenames]
    marks = [len(s.stderr) for s in used]
    yield
    for s, mark in zip(used, marks):
        _healthy(s, mark)


@pytest.fixture(params=TRANSPORTS)
def transport(request):
    return request.param


@pytest.fixture(params=CLIENTS)
def kind(request):
    return request.param


@pytest.fixture
def peer(server, transport, kind):
    with connect(server, transport, kind, OWNER) as p:
        yield p


@pytest.fixture
def work(peer, request):
    """A fresh directory for this test (0755, owned by OWNER), its name."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", request.node.name)
    peer.mkdir(name, 0o755)
    return name


def stats_of(server, transport="tcp"):
    """/stats, parsed: era, committed era, dirty blocks."""
    with connect(server, transport, "ours", OWNER, "main") as m:
        text = m.read_file("stats").decode()
    era = re.search(r"^era:\t(\d+) \(committed (\d+)\)$", text, re.M)
    dirty = re.search(r"^dirty:\t(\d+) blocks", text, re.M)
    assert era and dirty, text
    return int(era.group(1)), int(era.group(2)), int(dirty.group(1))


# --- version, auth, attach ------------------------------------------------------------------

def test_version_negotiates_msize(server, transport):
    with connect(server, transport, "py9p", OWNER, msize=8192) as p:
        assert p.msize == 8192
    with connect(server, transport, "py9p", OWNER, msize=4 << 20) as p:
        assert p.msize == (1 << 20) + 24          # the server's offer: 1 MiB of payload
    with connect(server, transport, "ours", OWNER, msize=65536 + 24) as p:
        assert p.msize == 65536 + 24
    with connect(server, transport, "ours", OWNER) as p:
        assert p.msize == (1 << 20) + 24


def test_version_strings(server, transport):
    with connect(server, transport, "py9p", OWNER) as p:
        assert p.client._version(8192, b"9P2000.u").version == b"9P2000"
        assert p.client._version(8192, b"9P2000.L").version == b"9P2000"
        assert p.client._version(8192, b"XP1999").version == b"unknown"
    with pytest.raises(py9p.VersionError):    # py9p insists on the dialect it asked for
        py9p.Client(server.connect_socket(transport), py9p.Credentials(OWNER),
                    ver=py9p.Version.v9P2000u)


@pytest.mark.parametrize("client", CLIENTS)
def test_version_aborts_the_session(server, transport, client):
    """Tversion clunks every fid: fids are unknown afterwards, and ORCLOSE files go."""
    with connect(server, transport, client, OWNER) as p:
        d = f"vers-{transport}-{client}"
        p.mkdir(d)
        f = p.walk(d)
        p.create(f, "tmp", 0o644, OWRITE | ORCLOSE)
        p.write(f, 0, b"x")
        if client == "py9p":
            assert p.client._version(8192, b"9P2000").version == b"9P2000"
        else:
            p.client.version(8192)
        assert errs(p.stat, f) == E_UNKNOWNFID
        assert errs(p.stat, p.root) == E_UNKNOWNFID
    with connect(server, transport, client, OWNER) as q:
        assert [s.name for s in q.listdir(d)] == []


@pytest.mark.parametrize("client", CLIENTS)
def test_auth_not_required_with_a(server, transport, client):
    with connect(server, transport, client, OWNER) as p:
        if client == "py9p":
            # py9p's login sent a Tauth already and went on without it; ask again by hand.
            assert errs(p._call, p.client._auth, 77, OWNER.encode(), b"") == E.ENOAUTH
        else:
            assert errs(p._call, "auth", p.newfid(), OWNER, "") == E.ENOAUTH


def test_attach_trees(server, transport, kind):
    for aname in ("", "root", "main/active"):
        with connect(server, transport, kind, OWNER, aname) as p:
            st = p.stat(p.root)
            assert st.qid.type == QTDIR and st.mode & DMDIR
            assert st.name == "root" and st.uid == OWNER
    with connect(server, transport, kind, OWNER, "main") as m:
        top = m.listdir("")
        assert sorted(s.name for s in top) == ["cons", "root", "stats"]
        assert m.stat(m.root).qid.type == QTDIR
        assert m.stat_path("root/..").name == "/"      # from /root, '..' reaches the top
    with pytest.raises(P9Error) as ei:
        connect(server, transport, kind, OWNER, "nonsense")
    assert ei.value.ename == f"{E.EUNKTREE} 'nonsense'"


# --- walk -----------------------------------------------------------------------------------

def test_walk(peer, work):
    p = peer
    p.mkdir(f"{work}/a")
    p.mkdir(f"{work}/a/b")
    p.write_file(f"{work}/a/b/file", b"data")
    qa = p.stat_path(f"{work}/a").qid
    f = p.newfid()
    qids = p.walk_qids(p.root, f, [work, "a", "b", "file"])
    assert [q.type for q in qids] == [QTDIR, QTDIR, QTDIR, 0]
    assert qids[1] == qa
    assert p.stat(f).name == "file"
    p.clunk(f)
    # A walk that fails after the first name answers the qids walked, and newfid is not made.
    g = p.newfid()
    qids = p.walk_qids(p.root, g, [work, "a", "nope", "x"])
    assert len(qids) == 2
    assert errs(p.stat, g) == E_UNKNOWNFID
    # Failing at the first name is an error.
    assert errs(p.walk_qids, p.root, p.newfid(), ["nope"]) == E.ENOENT
    # Walking through a file.
    assert len(p.walk_qids(p.root, p.newfid(), [work, "a", "b", "file", "x"])) == 4
    ff = p.walk(f"{work}/a/b/file")
    assert errs(p.walk_qids, ff, p.newfid(), ["x"]) == E.ENOTDIR
    p.clunk(ff)
    # '..' goes up; at the attach root it stays there; zero names clone.
    up = p.newfid()
    assert p.walk_qids(p.root, up, [work, "a", "b", ".."])[-1] == qa
    p.clunk(up)
    assert p.walk_qids(p.root, p.newfid(), [".."])[0] == p.stat(p.root).qid
    c = p.newfid()
    assert p.walk_qids(p.root, c, []) == []
    assert p.stat(c).qid == p.stat(p.root).qid
    p.clunk(c)
    # Names a server must refuse.
    for bad in (".", "a/b"):
        with pytest.raises(P9Error):
            p.walk_qids(p.root, p.newfid(), [work, bad])


def test_walk_deep(peer, work):
    """20 levels: our client splits the walk in Twalks of 16; a Twalk of 17 names is refused
    and the connection keeps serving."""
    p = peer
    path = work
    for i in range(20):
        path += f"/d{i}"
        p.mkdir(path)
    p.write_file(path + "/leaf", b"deep")
    names = path.split("/") + ["leaf"]
    if p.kind == "ours":
        assert p.read_file("/".join(names)) == b"deep"
    else:
        with pytest.raises(P9Error):
            p.walk_qids(p.root, p.newfid(), names[:17])
        f = p.newfid()
        assert len(p.walk_qids(p.root, f, names[:16])) == 16
        g = p.walk(names[16:], f)
        p.open(g, OREAD)
        assert p.readall(g) == b"deep"
        p.clunk(g)
        p.clunk(f)


# --- create, open, read, write, clunk, remove, stat -----------------------------------------

def test_file_round_trip(peer, work):
    p = peer
    data = bytes(range(256)) * (3 * 4096 + 7)        # 3 MiB and change: many iounits
    d = p.walk(work)
    qid, iounit = p.create(d, "f", 0o644, ORDWR)
    assert qid.type == 0 and iounit == p.msize - 24
    assert p.writeall(d, 0, data) == len(data)
    assert p.read(d, 5, 10) == data[5:15]
    assert p.read(d, len(data), 100) == b""
    assert p.read(d, len(data) + 10, 100) == b""
    st = p.stat(d)
    assert (st.name, st.length, st.mode, st.uid, st.muid) == ("f", len(data), 0o644, OWNER,
                                                               OWNER)
    assert st.gid == p.stat_path(work).gid        # the group is the directory's
    assert st.qid.path == qid.path
    p.clunk(d)
    assert errs(p.clunk, d) == E_UNKNOWNFID
    assert p.read_file(f"{work}/f") == data
    # Writing past the end leaves a hole of zeros.
    f = p.walk(f"{work}/f")
    p.open(f, OWRITE)
    p.write(f, len(data) + 100, b"end")
    p.clunk(f)
    got = p.read_file(f"{work}/f")
    assert got == data + bytes(100) + b"end"
    # Create over an existing name; remove; walk to it afterwards.
    d = p.walk(work)
    assert errs(p.create, d, "f", 0o644, OWRITE) == E.EEXIST
    f = p.walk(f"{work}/f")
    p.remove(f)
    assert errs(p.stat, f) == E_UNKNOWNFID             # remove clunks the fid
    assert not p.exists(f"{work}/f")
    assert errs(p.walk_qids, d, p.newfid(), ["f"]) == E.ENOENT
    p.clunk(d)


def test_removed_files_and_directories(peer, work):
    """A fid outlives the removal of its file: an open file still reads (and stats under its
    own name), but nothing can be created in a removed directory, nor written to a removed
    file."""
    p = peer
    p.mkdir(f"{work}/gone")
    d = p.walk(f"{work}/gone")
    p.remove_path(f"{work}/gone")
    assert errs(p.create, d, "x", 0o644, OWRITE) == E.ENOENT
    assert errs(p.create, d, "y", DMDIR | 0o755, OREAD) == E.ENOENT
    p.clunk(d)
    assert [s.name for s in p.listdir(work)] == []
    p.write_file(f"{work}/f", b"still here")
    f = p.walk(f"{work}/f")
    p.open(f, ORDWR)
    p.remove_path(f"{work}/f")
    assert p.read(f, 0, 100) == b"still here"
    assert errs(p.write, f, 0, b"x") == E.ENOENT
    st = p.stat(f)
    assert (st.name, st.length) == ("f", 10)
    p.clunk(f)
    # A file replaced by a rename onto its name is removed the same way.
    p.write_file(f"{work}/a", b"A")
    p.write_file(f"{work}/b", b"B")
    f = p.walk(f"{work}/b")
    p.open(f, OREAD)
    p.wstat_path(f"{work}/a", name="b")
    assert p.read(f, 0, 10) == b"B"
    assert p.stat(f).name == "b"
    p.clunk(f)
    assert p.read_file(f"{work}/b") == b"A"


def test_directories(peer, work):
    p = peer
    qid = p.mkdir(f"{work}/sub", 0o755)
    assert qid.type == QTDIR
    p.write_file(f"{work}/sub/x", b"x")
    st = p.stat_path(f"{work}/sub")
    assert st.mode == DMDIR | 0o755 and st.length == 0
    assert errs(p.remove_path, f"{work}/sub") == E.ENOTEMPTY
    assert p.exists(f"{work}/sub/x")
    # A directory cannot be opened for writing, nor created open for writing.
    f = p.walk(f"{work}/sub")
    assert errs(p.open, f, OWRITE) == E.EISDIR
    p.clunk(f)
    d = p.walk(work)
    assert errs(p.create, d, "sub2", DMDIR | 0o755, OWRITE) == E.EISDIR
    p.clunk(d)
    # Bad names for create.
    for bad in ("..", ".", "a/b"):
        d = p.walk(work)
        with pytest.raises(P9Error):
            p.create(d, bad, 0o644, OWRITE)
        p.clunk(d)
    p.remove_path(f"{work}/sub/x")
    p.remove_path(f"{work}/sub")
    assert [s.name for s in p.listdir(work)] == []


def test_open_modes(peer, work):
    p = peer
    p.write_file(f"{work}/f", b"0123456789")
    f = p.walk(f"{work}/f")
    assert errs(p.read, f, 0, 10) == E_NOTOPEN
    p.open(f, OREAD)
    assert errs(p.open, f, OREAD) == E_OPEN
    assert errs(p.write, f, 0, b"x") == E_NOTWRITE
    p.clunk(f)
    f = p.walk(f"{work}/f")
    p.open(f, OWRITE)
    assert errs(p.read, f, 0, 10) == E_NOTREAD
    p.clunk(f)
    f = p.walk(f"{work}/f")
    assert errs(p.open, f, OEXEC) == E.EPERM          # mode 0644: OEXEC needs x
    p.clunk(f)


def test_open_exec_needs_x(peer, work):
    p = peer
    p.write_file(f"{work}/f", b"#!/bin/rc", perm=0o755)
    f = p.walk(f"{work}/f")
    p.open(f, OEXEC)
    assert p.read(f, 0, 100) == b"#!/bin/rc"
    p.clunk(f)


def test_otrunc(peer, work):
    p = peer
    p.write_file(f"{work}/f", b"x" * 100000)
    q0 = p.stat_path(f"{work}/f").qid
    f = p.walk(f"{work}/f")
    p.open(f, OWRITE | OTRUNC)
    assert p.stat(f).length == 0
    p.write(f, 0, b"new")
    p.clunk(f)
    st = p.stat_path(f"{work}/f")
    assert st.length == 3 and st.qid.path == q0.path
    assert p.read_file(f"{work}/f") == b"new"
    # ORDWR|OTRUNC as well.
    f = p.walk(f"{work}/f")
    p.open(f, ORDWR | OTRUNC)
    assert p.read(f, 0, 10) == b""
    p.clunk(f)


def test_orclose(peer, work):
    p = peer
    d = p.walk(work)
    p.create(d, "tmp", 0o644, ORDWR | ORCLOSE)
    p.write(d, 0, b"scratch")
    assert p.read(d, 0, 100) == b"scratch"
    assert p.exists(f"{work}/tmp")
    p.clunk(d)
    assert not p.exists(f"{work}/tmp")
    # Opening an existing file with ORCLOSE removes it on clunk too.
    p.write_file(f"{work}/old", b"old")
    f = p.walk(f"{work}/old")
    p.open(f, OREAD | ORCLOSE)
    assert p.read(f, 0, 10) == b"old"
    p.clunk(f)
    assert not p.exists(f"{work}/old")
    assert [s.name for s in p.listdir(work)] == []


def test_dmexcl(server, peer, work, transport):
    p = peer
    d = p.walk(work)
    qid, _ = p.create(d, "lock", DMEXCL | 0o666, ORDWR)
    assert qid.type & QTEXCL
    assert p.stat_path(f"{work}/lock").mode == DMEXCL | 0o644     # masked by 0755
    # A second open, on this connection or by the other client on the other transport.
    g = p.walk(f"{work}/lock")
    assert errs(p.open, g, OREAD) == E.EEXCL
    p.clunk(g)
    other_t = "unix" if transport == "tcp" else "tcp"
    other_k = "ours" if p.kind == "py9p" else "py9p"
    with connect(server, other_t, other_k, OWNER) as q:
        h = q.walk(f"{work}/lock")
        assert errs(q.open, h, OWRITE) == E.EEXCL
        q.clunk(h)
        p.clunk(d)                                   # the creator lets go
        h = q.walk(f"{work}/lock")
        q.open(h, OWRITE)
        q.write(h, 0, b"mine")
        g = p.walk(f"{work}/lock")
        assert errs(p.open, g, OREAD) == E.EEXCL
        p.clunk(g)
        q.clunk(h)
    assert p.read_file(f"{work}/lock") == b"mine"


def test_dmappend(peer, work):
    p = peer
    d = p.walk(work)
    qid, _ = p.create(d, "log", DMAPPEND | 0o644, ORDWR)
    assert qid.type & QTAPPEND
    assert p.write(d, 0, b"abc") == 3
    assert p.write(d, 0, b"def") == 3            # offsets are ignored: writes go to the end
    assert p.write(d, 1000, b"ghi") == 3
    assert p.write(d, 1, b"jkl") == 3
    p.clunk(d)
    assert p.read_file(f"{work}/log") == b"abcdefghijkl"
    st = p.stat_path(f"{work}/log")
    assert st.length == 12 and st.mode == DMAPPEND | 0o644
    # Big appends in several iounits keep their order too.
    f = p.walk(f"{work}/log")
    p.open(f, OWRITE)
    big = bytes(range(256)) * 8192                # 2 MiB
    p.writeall(f, 0, big)
    p.clunk(f)
    assert p.read_file(f"{work}/log") == b"abcdefghijkl" + big


@pytest.mark.parametrize("parent, perm, want", [
    (0o750, 0o666, 0o640),
    (0o750, 0o777, 0o751),                        # the x bits are not masked for files
    (0o700, 0o644, 0o600),
    (0o777, 0o666, 0o666),
    (0o750, DMDIR | 0o777, DMDIR | 0o750),
    (0o705, DMDIR | 0o777, DMDIR | 0o705),
    (0o750, DMEXCL | 0o666, DMEXCL | 0o640),
    (0o750, DMAPPEND | 0o622, DMAPPEND | 0o600),
])
def test_create_perm_is_masked_by_the_parent(peer, work, parent, perm, want):
    p = peer
    p.mkdir(f"{work}/p", 0o777)
    p.wstat_path(f"{work}/p", mode=DMDIR | parent)
    assert p.stat_path(f"{work}/p").mode == DMDIR | parent
    d = p.walk(f"{work}/p")
    p.create(d, "new", perm, OREAD)
    assert p.stat(d).mode == want
    p.clunk(d)
    assert p.stat_path(f"{work}/p/new").mode == want


# --- wstat: rename, truncate, the rest ------------------------------------------------------

def test_rename_keeps_fids_bound(server, peer, work):
    p = peer
    data = b"contents of the file" * 1000
    p.write_file(f"{work}/old", data)
    q0 = p.stat_path(f"{work}/old").qid
    f = p.walk(f"{work}/old")
    p.open(f, OREAD)
    assert p.read(f, 0, 8) == data[:8]
    g = p.walk(f"{work}/old")
    p.wstat(g, name="new")                        # name only
    p.clunk(g)
    assert p.readall(f) == data                   # read through the fid opened before
    st = p.stat(f)
    assert st.name == "new" and st.qid.path == q0.path
    assert not p.exists(f"{work}/old")
    assert p.stat_path(f"{work}/new").qid.path == q0.path
    # Rename through the open fid itself; another client sees the new name.
    p.wstat(f, name="newer")
    assert p.read(f, 0, 8) == data[:8]
    p.clunk(f)
    other = "ours" if p.kind == "py9p" else "py9p"
    with connect(server, "tcp", other, OWNER) as q:
        assert [s.name for s in q.listdir(work)] == ["newer"]
        assert q.read_file(f"{work}/newer") == data
        assert q.stat_path(f"{work}/newer").qid.path == q0.path


def test_rename_replaces_an_existing_file(peer, work):
    p = peer
    p.write_file(f"{work}/a", b"AAA")
    p.write_file(f"{work}/b", b"BBBBBB")
    qa = p.stat_path(f"{work}/a").qid
    p.wstat_path(f"{work}/a", name="b")
    names = [s.name for s in p.listdir(work)]
    assert names == ["b"]
    st = p.stat_path(f"{work}/b")
    assert st.qid.path == qa.path and st.length == 3
    assert p.read_file(f"{work}/b") == b"AAA"
    # Never onto a directory, never a directory onto a file.
    p.mkdir(f"{work}/dir")
    assert errs(p.wstat_path, f"{work}/b", name="dir") == E.EEXIST
    assert errs(p.wstat_path, f"{work}/dir", name="b") == E.EEXIST
    assert errs(p.wstat_path, f"{work}/b", name="x/y") == E.EBADNAME
    p.wstat_path(f"{work}/b", name="b")            # its own name: nothing happens
    assert sorted(s.name for s in p.listdir(work)) == ["b", "dir"]


def test_truncate_and_extend(peer, work):
    p = peer
    data = bytes(range(256)) * 200
    p.write_file(f"{work}/f", data)
    p.wstat_path(f"{work}/f", length=1000)
    assert p.stat_path(f"{work}/f").length == 1000
    assert p.read_file(f"{work}/f") == data[:1000]
    p.wstat_path(f"{work}/f", length=100000)      # extension reads zeros
    assert p.stat_path(f"{work}/f").length == 100000
    assert p.read_file(f"{work}/f") == data[:1000] + bytes(99000)
    p.wstat_path(f"{work}/f", length=0)
    assert p.read_file(f"{work}/f") == b""
    p.mkdir(f"{work}/d")
    assert errs(p.wstat_path, f"{work}/d", length=5) == E.EDIRLEN
    p.wstat_path(f"{work}/d", length=0)


def test_wstat_mode_mtime_gid(peer, work):
    p = peer
    p.write_file(f"{work}/f", b"x")
    p.wstat_path(f"{work}/f", mode=0o600, mtime=1234567890)
    st = p.stat_path(f"{work}/f")
    assert st.mode == 0o600 and st.mtime == 1234567890
    p.wstat_path(f"{work}/f", gid="adm")          # the owner is a member of adm
    assert p.stat_path(f"{work}/f").gid == "adm"
    assert errs(p.wstat_path, f"{work}/f", gid="nosuchgroup") == E.EBADUSER
    assert errs(p.wstat_path, f"{work}/f", mode=DMDIR | 0o755) == E.EDIRMODE
    p.mkdir(f"{work}/d")
    assert errs(p.wstat_path, f"{work}/d", mode=0o755) == E.EDIRMODE
    # All or nothing: a bad field leaves the others as they were.
    assert errs(p.wstat_path, f"{work}/f", mode=0o644, gid="nosuchgroup") == E.EBADUSER
    assert p.stat_path(f"{work}/f").mode == 0o600


def test_wstat_nothing_commits(server, peer, work):
    """A Twstat that changes nothing is 9P2000's fsync: answered once the tree is on disk."""
    p = peer
    _, before, _ = stats_of(server)
    p.write_file(f"{work}/f", b"must be durable")
    era, committed, dirty = stats_of(server)
    assert committed == before and dirty > 0      # -i 3600: nothing synced it yet
    f = p.walk(f"{work}/f")
    p.wstat(f)                                    # every field "don't change"
    p.clunk(f)
    era2, committed2, dirty2 = stats_of(server)
    assert committed2 > committed and committed2 == era2 - 1 and dirty2 == 0


@pytest.mark.parametrize("client", CLIENTS)
def test_wstat_nothing_survives_sigkill(tmp_path, transport, client):
    with Server9pix(tmp_path) as srv:
        srv.start()
        with connect(srv, transport, client, OWNER) as p:
            p.mkdir("d")
            p.write_file("d/kept", b"K" * 70000)
            f = p.walk("d/kept")
            p.wstat(f)
            p.clunk(f)
            p.write_file("d/lost", b"never synced")
        srv.kill()
        srv.start()
        with connect(srv, transport, client, OWNER) as p:
            assert p.read_file("d/kept") == b"K" * 70000
            assert [s.name for s in p.listdir("d")] == ["kept"]


# --- directory reads ------------------------------------------------------------------------

NBIG = 10_000


def big_names():
    # Names of varied length so that stat entries straddle read boundaries in every way.
    return [f"e{i:05d}" + "x" * (i % 37) for i in range(NBIG)]


@pytest.fixture(scope="module")
def bigdir(server):
    """/root/big with 10,000 files, made with our async client, many creates in flight."""
    names = big_names()

    async def make():
        c = await Client.connect(server.tcp_dial, uname=OWNER)
        try:
            await c.mkdir("big")
            gate = asyncio.Semaphore(48)

            async def one(name):
                async with gate:
                    f = await c.walkpath("big")
                    await c.create(f, name, 0o644, OWRITE)
                    if name.endswith("7"):
                        await c.write(f, 0, name.encode())
                    await c.clunk(f)
            await asyncio.gather(*(one(n) for n in names))
        finally:
            await c.close()
    asyncio.run(make())
    return names


@pytest.mark.parametrize("msize", [8192, (1 << 20) + 24])
def test_directory_read_10000(server, bigdir, transport, kind, msize):
    with connect(server, transport, kind, OWNER, msize=msize) as p:
        entries = p.listdir("big")
    count = collections.Counter(s.name for s in entries)
    assert len(entries) == NBIG
    assert set(count) == set(bigdir)
    assert max(count.values()) == 1
    for s in entries:
        assert s.length == (len(s.name) if s.name.endswith("7") else 0), s
        assert s.mode == 0o644 and s.uid == OWNER


def test_directory_read_offsets(server, bigdir, transport):
    """Offset 0 restarts; any other offset must be where the last read ended; entries are never
    split, and a count too small for the next entry fails without losing it."""
    with connect(server, transport, "py9p", OWNER) as p:
        f = p.walk("big")
        p.open(f, OREAD)
        first = p.read(f, 0, 4000)
        assert 0 < len(first) <= 4000
        assert errs(p.read, f, 0 + 1, 4000) == E_BADOFFSET
        assert errs(p.read, f, len(first), 10) == "i/o count too small"
        second = p.read(f, len(first), 4000)
        assert p.parse_dir(first)[-1].name != p.parse_dir(second)[0].name
        again = p.read(f, 0, 4000)                # restart
        assert again == first
        names = []
        off = 0
        while True:                               # odd counts: never a split entry
            b = p.read(f, off, 999)
            if not b:
                break
            names += [s.name for s in p.parse_dir(b)]
            off += len(b)
        assert sorted(names) == sorted(bigdir)
        p.clunk(f)


# --- flush ----------------------------------------------------------------------------------

def test_flush_outstanding_cons_read_py9p(server, transport):
    """A read of /cons blocks until the console says something; Tflush answers Rflush and the
    read is never answered."""
    with connect(server, transport, "py9p", OWNER, "main") as p:
        sock = p.client.fd
        f = p.walk("cons")
        p.open(f, OREAD)
        assert p.read(f, 0, 1000) == b"creepy> "        # the prompt waiting for a new reader
        rd = py9p.Fcall(py9p.Tread, tag=1)
        rd.fid, rd.offset, rd.count = f, 0, 1000
        sock.send(rd)
        st = py9p.Fcall(py9p.Tstat, tag=2)
        st.fid = f
        sock.send(st)
        r = sock.recv()                               # the read is in the server's hands now
        assert (r.type, r.tag) == (py9p.Rstat, 2)
        fl = py9p.Fcall(py9p.Tflush, tag=3)
        fl.oldtag = 1
        sock.send(fl)
        r = sock.recv()
        assert (r.type, r.tag) == (py9p.Rflush, 3)
        st.tag = 4
        sock.send(st)
        r = sock.recv()                               # no Rread for tag 1 came before
        assert (r.type, r.tag) == (py9p.Rstat, 4)
        # The flushed read took nothing: what the console says next reaches the next read.
        with connect(server, transport, "ours", OWNER, "main") as q:
            assert "no connections" not in q.client.cons("who")
        out = b""
        while b"creepy> " not in out.split(b"who\n", 1)[-1]:
            out += p.read(f, 0, 1000)
        assert out.startswith(b"who\n"), out
        p.clunk(f)


def test_flush_outstanding_cons_read_ours(server, transport):
    async def go():
        c = await Client.connect(server.dialstring(transport), uname=OWNER, aname="main")
        try:
            f = await c.walkpath("cons")
            await c.open(f, OREAD)
            assert await c.read(f, 0, 1000) == b"creepy> "
            read = asyncio.ensure_future(c.read(f, 0, 1000))
            while not c.pending_tags():               # until the read task has sent its Tread
                await asyncio.sleep(0)
            await c.stat(f)                           # answered after the read was taken
            (tag,) = c.pending_tags()
            await c.flush(tag)                        # Rflush came
            with pytest.raises(Error9P) as ei:
                await read
            assert ei.value.ename == "interrupted"    # no Rread came before the Rflush
            await c.stat(f)
            assert c.pending_tags() == []
            # Nothing was consumed by the flushed read.
            m = await Client.connect(server.dialstring(transport), uname=OWNER, aname="main")
            try:
                await m.cons("who")
            finally:
                await m.close()
            out = b""
            while b"creepy> " not in out.split(b"who\n", 1)[-1]:
                out += await c.read(f, 0, 1000)
            assert out.startswith(b"who\n"), out
            await c.clunk(f)
        finally:
            await c.close()
    asyncio.run(asyncio.wait_for(go(), 120))      # a guard against a hang, not a measurement


# --- permissions: a second user -------------------------------------------------------------

USERS = f"""# uid:name:leader:members
0:none::
1:adm:adm:sys,{OWNER}
2:sys::{OWNER}
3:{OWNER}:{OWNER}:
4:{GLENDA}:{GLENDA}:
"""


@pytest.fixture(scope="module")
def users_server(tmp_path_factory):
    """A server whose /root/users knows glenda, with a tree glenda may not touch."""
    with Server9pix(tmp_path_factory.mktemp("users")) as s:
        s.start()
        with connect(s, "tcp", "ours", OWNER) as p:
            p.write_file("users", USERS.encode(), perm=0o664)
            p.mkdir("shared", 0o755)
            p.write_file("shared/secret", b"secret", perm=0o600)
            p.write_file("shared/public", b"public", perm=0o644)
            p.write_file("shared/other", b"other", perm=0o604)
            p.mkdir("private", 0o700)
            p.write_file("private/x", b"x", perm=0o644)
            p.mkdir("open", 0o777)
            p.wstat_path("open", mode=DMDIR | 0o777)     # create masked it with /root's 0775
            p.write_file("open/owned", b"owner's", perm=0o644)
        with connect(s, "tcp", "ours", OWNER, "main") as m:
            users = m.client.cons("users")
            assert f"4:{GLENDA}:{GLENDA}:" in users, users
        yield s


@pytest.fixture
def glenda(users_server, transport, kind):
    with connect(users_server, transport, kind, GLENDA) as g:
        yield g


def test_glenda_is_denied(users_server, glenda):
    g = glenda
    assert g.read_file("shared/public") == b"public"       # r for others
    assert g.read_file("shared/other") == b"other"
    # create in a 0755 directory owned by someone else
    d = g.walk("shared")
    assert errs(g.create, d, "mine", 0o644, OWRITE) == E.EPERM
    assert errs(g.create, d, "mydir", DMDIR | 0o755, OREAD) == E.EPERM
    g.clunk(d)
    # read a 0600 file
    f = g.walk("shared/secret")
    assert errs(g.open, f, OREAD) == E.EPERM
    g.clunk(f)
    # write, truncate, remove-on-close a 0644 file of someone else
    for mode in (OWRITE, ORDWR, OREAD | OTRUNC, OREAD | ORCLOSE):
        f = g.walk("shared/public")
        assert errs(g.open, f, mode) == E.EPERM, mode
        g.clunk(f)
    assert errs(g.remove_path, "shared/public") == E.EPERM
    assert g.exists("shared/public")
    assert errs(g.wstat_path, "shared/public", name="stolen") == E.EPERM
    assert errs(g.wstat_path, "shared/public", length=0) == E.EPERM
    assert errs(g.wstat_path, "shared/public", mode=0o666) == E.ENOTOWNER
    assert errs(g.wstat_path, "shared/public", mtime=1) == E.ENOTOWNER
    assert errs(g.wstat_path, "shared/public", uid=GLENDA) == E.ENOTOWNER
    # the users file is the owner's
    f = g.walk("users")
    assert errs(g.open, f, OWRITE) == E.EPERM
    g.clunk(f)
    # search permission: walking into a 0700 directory
    p = g.walk("private")
    assert errs(g.walk_qids, p, g.newfid(), ["x"]) == E.EPERM
    assert len(g.walk_qids(g.root, g.newfid(), ["private", "x"])) == 1
    g.clunk(p)
    # nothing changed
    with connect(users_server, "tcp", "ours", OWNER) as o:
        assert o.read_file("shared/public") == b"public"
        st = o.stat_path("shared/public")
        assert (st.name, st.mode, st.length, st.uid) == ("public", 0o644, 6, OWNER)
        assert sorted(s.name for s in o.listdir("shared")) == ["other", "public", "secret"]


def test_glenda_console_is_denied(users_server, transport, kind):
    with connect(users_server, transport, kind, GLENDA, "main") as g:
        for mode in (OREAD, OWRITE, ORDWR):
            f = g.walk("cons")
            assert errs(g.open, f, mode) == E.EPERM
            g.clunk(f)
        assert b"era:" in g.read_file("stats")          # 0664: others may read /stats


def test_glenda_in_a_world_writable_directory(users_server, glenda, transport):
    g = glenda
    name = f"{g.kind}-{transport}"
    g.write_file(f"open/{name}", b"glenda's", perm=0o666)
    st = g.stat_path(f"open/{name}")
    assert (st.uid, st.muid, st.mode) == (GLENDA, GLENDA, 0o666)
    assert st.gid == g.stat_path("open").gid
    g.wstat_path(f"open/{name}", mode=0o600)           # her own file
    g.wstat_path(f"open/{name}", name=name + ".renamed")
    # the owner's file there: she may not write it but may remove it (the directory says so)
    f = g.walk("open/owned")
    assert errs(g.open, f, OWRITE) == E.EPERM
    g.clunk(f)
    with connect(users_server, "tcp", "ours", OWNER) as o:
        assert o.stat_path(f"open/{name}.renamed").mode == 0o600
        o.write_file(f"open/owned-{name}", b"o", perm=0o644)
    g.remove_path(f"open/owned-{name}")
    g.remove_path(f"open/{name}.renamed")


def test_the_users_file_stays(users_server, transport, kind):
    """/root/users can be rewritten but not removed: not by Tremove, not by ORCLOSE, not by a
    rename away from its name or onto it."""
    with connect(users_server, transport, kind, OWNER) as o:
        assert errs(o.remove_path, "users") == E.EUSERSFILE
        f = o.walk("users")
        assert errs(o.open, f, OREAD | ORCLOSE) == E.EUSERSFILE
        o.clunk(f)
        assert errs(o.wstat_path, "users", name="users.old") == E.EUSERSFILE
        o.write_file("users.new", USERS.encode())
        assert errs(o.wstat_path, "users.new", name="users") == E.EUSERSFILE
        o.remove_path("users.new")
        assert o.read_file("users") == USERS.encode()


def test_unknown_user_is_none(users_server, transport, kind):
    with connect(users_server, transport, kind, "mallory") as m:
        name = f"none-{kind}-{transport}"
        m.write_file(f"open/{name}", b"?", perm=0o644)
        assert m.stat_path(f"open/{name}").uid == "none"
        f = m.walk("shared/secret")
        assert errs(m.open, f, OREAD) == E.EPERM
        m.clunk(f)
        m.remove_path(f"open/{name}")


# --- authentication without -a ----------------------------------------------------------------

@pytest.fixture(scope="module")
def auth_server(tmp_path_factory):
    with Server9pix(tmp_path_factory.mktemp("auth"), auth=True) as s:
        s.start()
        yield s


@pytest.mark.parametrize("client", CLIENTS)
def test_unix_socket_authenticates_by_peer_credentials(auth_server, client):
    with connect(auth_server, "unix", client, OWNER) as p:
        name = f"peercred-{client}"
        p.write_file(name, b"mine")
        assert p.read_file(name) == b"mine"
        st = p.stat_path(name)
        assert st.uid == OWNER and st.muid == OWNER
    assert "peer-credential auth" in auth_server.stderr


@pytest.mark.parametrize("client", CLIENTS)
def test_tcp_attach_refused_without_a(auth_server, client):
    with pytest.raises(P9Error) as ei:
        connect(auth_server, "tcp", client, OWNER)
    assert ei.value.ename == E.EAUTHTCP
    with pytest.raises(P9Error) as ei:
        connect(auth_server, "tcp", client, OWNER, "main")
    assert ei.value.ename == E.EAUTHTCP


@pytest.mark.parametrize("transport_", TRANSPORTS)
def test_tauth_refused_without_a(auth_server, transport_):
    if transport_ == "tcp":
        sock = auth_server.connect_socket("tcp")
        with sock:
            s = py9p.Sock(sock)
            v = py9p.Fcall(py9p.Tversion, tag=0xFFFF)
            v.msize, v.version = 8192, b"9P2000"
            s.send(v)
            assert s.recv().type == py9p.Rversion
            a = py9p.Fcall(py9p.Tauth, tag=1)
            a.afid, a.uname, a.aname = 5, OWNER.encode(), b""
            s.send(a)
            r = s.recv()
            assert r.type == py9p.Rerror and r.ename.decode() == E_TAUTH
    else:
        with connect(auth_server, "unix", "ours", OWNER) as p:
            assert errs(p._call, "auth", p.newfid(), OWNER, "") == E_TAUTH


class _Frames:
    """A file-like sink for py9p's marshaller: collects frames to send in one write."""

    def __init__(self):
        self.data = b""

    def write(self, b):
        self.data += b

    def fileno(self):
        return -1


def test_flush_in_the_same_buffer_as_the_read_takes_nothing(server, transport):
    with connect(server, transport, "py9p", OWNER, "main") as p:
        f = p.walk("cons")
        p.open(f, OREAD)
        assert p.read(f, 0, 1000) == b"creepy> "
        out = _Frames()
        m = py9p.Marshal9P()
        rd = py9p.Fcall(py9p.Tread, tag=1)
        rd.fid, rd.offset, rd.count = f, 0, 1        # would take one byte
        m.send(out, rd)
        fl = py9p.Fcall(py9p.Tflush, tag=2)
        fl.oldtag = 1
        m.send(out, fl)
        p.client.fd.sock.sendall(out.data)             # one write: one buffer at the server
        r = p.client.fd.recv()
        assert (r.type, r.tag) == (py9p.Rflush, 2)
        with connect(server, transport, "ours", OWNER, "main") as q:
            q.client.cons("who")
        # The flushed read never happened, so the console's echo is there whole.
        got = p.read(f, 0, 1000)
        assert got.startswith(b"who\n"), got
        p.clunk(f)
