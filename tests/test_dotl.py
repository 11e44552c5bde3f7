"""9P2000.L against the real server (creepy 9pix as a subprocess), with our own client and with
an independent one: py9p as shipped in p9fs speaks a part of 9P2000.L (Tlopen, Tlcreate,
Tgetattr, Treaddir, Tmkdir, Tunlinkat, Rlerror).  The Linux kernel's client drives every
message through a mount in tests/test_kernel.py.

Run one: `pytest tests/test_dotl.py -k rename`.
"""

import errno
import os
import stat as statmod

import pytest
from py9p import py9p

from creepy.ninep.client import Error9P, SyncClient
from creepy.ninep.codec import NONUNAME, QTDIR, QTSYMLINK
from servers import Server9pix, root_is_owner

L = "9P2000.L"
O_RDONLY, O_WRONLY, O_RDWR, O_CREAT, O_TRUNC = 0, 1, 2, 0o100, 0o1000
AT_REMOVEDIR = 0x200
SETATTR_MODE, SETATTR_UID, SETATTR_GID, SETATTR_SIZE = 1, 2, 4, 8
SETATTR_ATIME, SETATTR_MTIME, SETATTR_ATIME_SET, SETATTR_MTIME_SET = 0x10, 0x20, 0x80, 0x100
RDLCK, WRLCK, UNLCK = 0, 1, 2
DT_DIR, DT_REG, DT_LNK = 4, 8, 10


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = Server9pix(tmp_path_factory.mktemp("dotl"))
    srv.start()
    yield srv
    srv.close()


@pytest.fixture
def c(server):
    with SyncClient(server.unix_dial, version=L, timeout=60) as cl:
        yield cl


_work = iter(range(10**6))


@pytest.fixture
def work(c):
    """A fresh directory for one test, and a fid on it."""
    name = f"w{next(_work)}"
    c.mkdir(name)
    d = c.walkpath(name)
    yield name, d
    c.clunk(d)


def errno_of(fn, *args, **kw):
    with pytest.raises(Error9P) as e:
        fn(*args, **kw)
    assert e.value.errno is not None, e.value
    return e.value.errno


def names(c, fid):
    return [e[3] for e in c.readdir_all(fid)]


def test_version_and_attach_by_number(server):
    with SyncClient(server.unix_dial, version=L) as cl:
        assert cl.client.dialect == L
        # n_uname names the user: an unknown number is none, and none cannot write here
        with SyncClient(server.unix_dial, version=L, n_uname=424242) as nobody:
            a = nobody.getattr(nobody.root)
            assert statmod.S_ISDIR(a.mode)
            assert errno_of(nobody.write_file, "nobody-was-here", b"x") == errno.EACCES
        assert cl.getattr(cl.root).qid.type == QTDIR


def test_create_write_read_getattr_setattr(c, work):
    name, d = work
    f = c.walkpath("", d)
    qid, iounit = c.lcreate(f, "file", O_RDWR | O_CREAT, 0o640)
    assert iounit > 0
    assert c.write(f, 0, b"hello, world") == 12
    assert c.read(f, 0, 100) == b"hello, world"
    a = c.getattr(f)
    assert a.qid.path == qid.path and statmod.S_ISREG(a.mode) and a.mode & 0o777 == 0o640
    assert a.size == 12 and a.blocks == 1 and a.nlink == 1
    assert a.mtime_sec > 1_600_000_000 and 0 <= a.mtime_nsec < 10**9
    c.setattr(f, SETATTR_SIZE, size=5)                              # ftruncate on the open fid
    c.setattr(f, SETATTR_MODE, mode=0o600)
    c.setattr(f, SETATTR_MTIME | SETATTR_MTIME_SET | SETATTR_ATIME | SETATTR_ATIME_SET,
              mtime=(1_234_567_890, 123456789), atime=(1_000_000_000, 5))
    a = c.getattr(f)
    assert (a.size, a.mode & 0o777) == (5, 0o600)
    assert (a.mtime_sec, a.mtime_nsec) == (1_234_567_890, 123456789)
    assert (a.atime_sec, a.atime_nsec) == (1_000_000_000, 5)
    c.clunk(f)
    assert c.read_file(f"{name}/file") == b"hello"
    g = c.walkpath(f"{name}/file")
    c.lopen(g, O_WRONLY | O_TRUNC)
    assert c.getattr(g).size == 0
    c.clunk(g)


def test_readdir_of_2000_entries_with_stable_offsets(c, work):
    name, d = work
    want = sorted(f"n{i:05d}" for i in range(2000))
    for n in want:
        f = c.walkpath("", d)
        c.lcreate(f, n, O_WRONLY | O_CREAT, 0o644)
        c.clunk(f)
    f = c.walkpath("", d)
    c.lopen(f, O_RDONLY)
    ents = c.readdir_all(f)
    assert [e[3] for e in ents] == [".", ".."] + want
    assert all(e[2] == DT_REG for e in ents[2:]) and ents[0][2] == DT_DIR
    # Small reads: entries are never split, and each offset continues where it says.
    small = []
    off = 0
    while True:
        got = c.readdir(f, off, 200)
        if not got:
            break
        small.extend(got)
        off = got[-1][1]
    assert [e[3] for e in small] == [e[3] for e in ents]
    # Any offset handed out lately continues after its entry, even after reads beyond it.
    mid = ents[1000]
    assert c.readdir(f, mid[1], 100)[0][3] == ents[1001][3]
    assert errno_of(c.readdir, f, 987654321, 100) == errno.ESPIPE
    c.clunk(f)


def test_renames_across_directories(c, work):
    name, d = work
    c.mkdir(f"{name}/a")
    c.mkdir(f"{name}/b")
    c.mkdir(f"{name}/a/sub")
    c.write_file(f"{name}/a/sub/deep", b"deep")
    c.write_file(f"{name}/a/f", b"file")
    a, b = c.walkpath(f"{name}/a"), c.walkpath(f"{name}/b")
    q = c.stat_path(f"{name}/a/f").qid
    c.renameat(a, "f", b, "g")                          # a file moves, keeping its qid
    assert c.stat_path(f"{name}/b/g").qid.path == q.path
    c.renameat(a, "sub", b, "sub2")                     # a directory moves with its tree
    assert c.read_file(f"{name}/b/sub2/deep") == b"deep"
    assert names(c, _opened(c, a)) == [".", ".."]
    c.write_file(f"{name}/a/h", b"replaced")
    c.renameat(b, "g", a, "h")                          # replaces a file
    assert c.read_file(f"{name}/a/h") == b"file"
    c.mkdir(f"{name}/a/empty")
    c.renameat(b, "sub2", a, "empty")                   # a directory replaces an empty one
    assert c.read_file(f"{name}/a/empty/deep") == b"deep"
    c.mkdir(f"{name}/b/full")
    c.write_file(f"{name}/b/full/x", b"x")
    assert errno_of(c.renameat, b, "full", a, "empty") == errno.ENOTEMPTY
    assert errno_of(c.renameat, a, "h", a, "empty") == errno.EISDIR
    assert errno_of(c.renameat, a, "empty", a, "h") == errno.ENOTDIR
    inner = c.walkpath(f"{name}/a/empty")
    assert errno_of(c.renameat, a, "empty", inner, "loop") == errno.EINVAL
    assert errno_of(c.renameat, a, "nothere", b, "x") == errno.ENOENT
    f = c.walkpath(f"{name}/a/h")                       # Trename: by fid
    c.lrename(f, b, "byfid")
    assert c.read_file(f"{name}/b/byfid") == b"file"
    for fid in (f, inner, a, b):
        c.clunk(fid)


def _opened(c, fid):
    g = c.walkpath("", fid)
    c.lopen(g, O_RDONLY)
    return g


def test_symlinks(c, work, server):
    name, d = work
    c.write_file(f"{name}/target", b"pointed at")
    q = c.symlink(d, "link", "target")
    assert q.type & QTSYMLINK
    f = c.walkpath(f"{name}/link")
    assert c.readlink(f) == "target"
    a = c.getattr(f)
    assert statmod.S_ISLNK(a.mode) and a.size == len("target")
    c.clunk(f)
    g = _opened(c, d)
    assert ("link", DT_LNK) in [(e[3], e[2]) for e in c.readdir_all(g)]
    c.clunk(g)
    f = c.walkpath(f"{name}/target")
    assert errno_of(c.readlink, f) == errno.EINVAL      # not a link
    c.clunk(f)
    assert errno_of(c.symlink, d, "link", "again") == errno.EEXIST
    # 9P2000 sees a file with DMSYMLINK whose content is the target
    with SyncClient(server.unix_dial) as p9:
        st = p9.stat_path(f"{name}/link")
        assert st.mode & 0x02000000 and p9.read_file(f"{name}/link") == b"target"


def test_unlink_and_unlink_of_open_files(c, work):
    name, d = work
    c.write_file(f"{name}/f", b"open and removed")
    f = c.walkpath(f"{name}/f")
    c.lopen(f, O_RDWR)
    c.unlinkat(d, "f")
    assert c.write(f, 16, b", still written") == 15
    assert c.read(f, 0, 100) == b"open and removed, still written"
    c.setattr(f, SETATTR_SIZE, size=4)
    assert c.read(f, 0, 100) == b"open" and c.getattr(f).size == 4
    c.clunk(f)
    assert names(c, _opened(c, d)) == [".", ".."]
    c.mkdir(f"{name}/dir")
    c.write_file(f"{name}/file", b"")
    assert errno_of(c.unlinkat, d, "dir", 0) == errno.EISDIR
    assert errno_of(c.unlinkat, d, "file", AT_REMOVEDIR) == errno.ENOTDIR
    c.write_file(f"{name}/dir/x", b"")
    assert errno_of(c.unlinkat, d, "dir", AT_REMOVEDIR) == errno.ENOTEMPTY
    c.unlinkat(d, "file")
    c.remove_path(f"{name}/dir/x")
    c.unlinkat(d, "dir", AT_REMOVEDIR)
    assert errno_of(c.unlinkat, d, "dir", AT_REMOVEDIR) == errno.ENOENT


def test_statfs_counts_blocks_of_the_log(c, work):
    name, d = work
    before = c.statfs(d)
    assert before.fstype == 0x01021997 and before.bsize == 16384 and before.namelen == 255
    assert 0 < before.bavail <= before.bfree <= before.blocks
    assert before.blocks * before.bsize <= 256 << 20
    c.write_file(f"{name}/big", os.urandom(4 << 20))
    c.fsync(d)                                           # committed: blocks are used now
    after = c.statfs(d)
    assert after.bfree <= before.bfree - (4 << 20) // before.bsize


def test_fsync_commits_before_it_answers(tmp_path):
    srv = Server9pix(tmp_path)                          # -i 3600: no periodic sync
    srv.start()
    try:
        with SyncClient(srv.unix_dial, version=L) as cl:
            cl.write_file("kept", b"fsynced")
            f = cl.walkpath("kept")
            cl.lopen(f, O_RDONLY)
            cl.fsync(f)
            cl.write_file("lost", b"not synced")
        srv.kill()                                      # no sync at exit
        srv.start()
        with SyncClient(srv.unix_dial, version=L) as cl:
            assert cl.read_file("kept") == b"fsynced"
            assert errno_of(cl.read_file, "lost") == errno.ENOENT
    finally:
        srv.close()


def test_locks_are_advisory_byte_ranges_per_server(server, work, c):
    name, d = work
    c.write_file(f"{name}/locked", b"x" * 100)
    with SyncClient(server.unix_dial, version=L) as other:
        f = c.walkpath(f"{name}/locked")
        g = other.walkpath(f"{name}/locked")
        c.lopen(f, O_RDWR)
        other.lopen(g, O_RDWR)
        assert c.lock(f, WRLCK, 0, 10, proc_id=1) == 0
        assert other.lock(g, WRLCK, 5, 10, proc_id=2) == 1           # blocked
        assert other.lock(g, RDLCK, 10, 10, proc_id=2) == 0          # beside it: fine
        assert c.lock(f, RDLCK, 10, 5, proc_id=1) == 0               # readers share
        held = other.getlock(g, WRLCK, 0, 0, proc_id=2)
        assert (held.ltype, held.start, held.length, held.proc_id) == (WRLCK, 0, 10, 1)
        assert c.lock(f, UNLCK, 0, 0, proc_id=1) == 0                # unlock all of it
        assert other.lock(g, WRLCK, 0, 10, proc_id=2) == 0
        free = c.getlock(f, RDLCK, 50, 10, proc_id=1)
        assert free.ltype == UNLCK
        other.clunk(g)                                               # a clunk releases
        assert c.lock(f, WRLCK, 0, 0, proc_id=1) == 0
        c.clunk(f)


def test_numeric_owners_follow_the_users_file(server, work, c):
    name, d = work
    a = c.getattr(d)
    owner = c.stat_path("").uid                         # the numbers our user has
    assert a.uid == int(owner)
    assert errno_of(c.setattr, d, SETATTR_UID, uid=999999) == errno.EINVAL
    # none and unknown names are Linux's nobody
    with SyncClient(server.unix_dial, version=L, n_uname=NONUNAME, uname="none") as nb:
        assert nb.getattr(nb.root).uid == a.uid


def test_xattrs_links_and_device_files_are_answered_cleanly(c, work):
    name, d = work
    c.write_file(f"{name}/f", b"")
    f = c.walkpath(f"{name}/f")
    x = c.alloc_fid()
    assert c.xattrwalk(f, x, "") == 0                   # the list is empty
    assert c.read(x, 0, 100) == b""
    c.clunk(x)
    y = c.alloc_fid()
    assert errno_of(c.xattrwalk, f, y, "user.comment") == errno.ENODATA
    c.free_fid(y)
    assert errno_of(c.xattrcreate, f, "user.comment", 3) == errno.EOPNOTSUPP
    assert errno_of(c.link, d, f, "hard") == errno.EPERM
    assert errno_of(c.mknod, d, "dev", 0o20644, 1, 3) == errno.EPERM
    c.clunk(f)


def test_walk_errors_are_errnos_and_an_open_fid_is_not_walked(c, work):
    name, d = work
    f = c.alloc_fid()
    assert errno_of(c.walk, d, f, ["nothere"]) == errno.ENOENT
    g = c.walkpath("")
    c.lopen(g, O_RDONLY)
    assert errno_of(c.walk, g, f, [name]) == errno.EBADF       # walk(5): not from an open fid
    assert c.walk(g, f, []) == []                               # but a clone may be made
    c.clunk(f)
    c.clunk(g)


def test_py9p_speaks_9p2000l_with_the_server(tmp_path):
    # py9p attaches with n_uname 0: a users file gives 0 to the server's owner.
    srv = Server9pix(tmp_path)
    srv.start()
    try:
        root_is_owner(srv)
        with SyncClient(srv.unix_dial) as p9:
            p9.mkdir("w")
        _py9p_session(srv, "w")
    finally:
        srv.close()


def _py9p_session(server, name):
    cl = py9p.Client(server.connect_socket("unix"), py9p.Credentials("anyone"),
                     ver=py9p.Version.v9P2000L, msize=65536)
    try:
        assert cl.version == py9p.Version.v9P2000L
        root, wd, f = py9p.Client.ROOT, 100, 101
        cl._walk(root, wd, [name])
        cl._mkdir(wd, "made", 0o755)
        cl._walk(wd, f, [])
        cl._lcreate(f, "file", O_RDWR | O_CREAT, 0o644, 0)
        assert cl._write(f, 0, b"from py9p").count == 9
        cl._clunk(f)
        cl._walk(wd, f, ["file"])
        cl._lopen(f, O_RDONLY)
        assert cl._read(f, 0, 100).data == b"from py9p"
        st = cl._getattr(f).stat[0]
        assert statmod.S_ISREG(st.mode) and st.length == 9
        cl._clunk(f)
        cl._walk(wd, f, [])
        cl._lopen(f, O_RDONLY)
        ents = cl._readdir(f, 0, 8192).stat
        assert sorted(e.name for e in ents) == [".", "..", "file", "made"]
        cl._clunk(f)
        cl._unlinkat(wd, "made", AT_REMOVEDIR)
        cl._unlinkat(wd, "file", 0)
        with pytest.raises(py9p.RpcError) as e:
            cl._unlinkat(wd, "file", 0)
        assert e.value.args[0] == errno.ENOENT            # Rlerror carries the errno
    finally:
        cl.fd.close()


def test_files_of_a_linked_tree_have_qids_of_their_own(server, c, work):
    # issue 9 item 6: after console `link a b`, a/f and b/f are two files with two qids.
    name, d = work
    c.mkdir(f"{name}/a")
    c.write_file(f"{name}/a/f", b"original")
    with SyncClient(server.unix_dial, aname="main") as m:
        assert "synced" in m.cons("sync")
        assert "linked" in m.cons(f"link {name}/a {name}/b")
    qa = c.stat_path(f"{name}/a/f").qid.path
    qb = c.stat_path(f"{name}/b/f").qid.path
    assert qa != qb
    c.write_file(f"{name}/b/f", b"changed in b")
    assert c.read_file(f"{name}/a/f") == b"original"
    assert (c.stat_path(f"{name}/a/f").qid.path, c.stat_path(f"{name}/b/f").qid.path) == (qa, qb)
    g = _opened(c, c.walkpath(f"{name}/b"))
    assert {e[3]: e[0].path for e in c.readdir_all(g)}["f"] == qb    # readdir agrees with walk
    # A file that came with the link cannot leave its qid space; one made later can.
    b = c.walkpath(f"{name}/b")
    assert errno_of(c.renameat, b, "f", d, "f") == errno.EXDEV
    c.write_file(f"{name}/b/later", b"made after the link")
    c.renameat(b, "later", d, "later")
    assert c.read_file(f"{name}/later") == b"made after the link"
    c.clunk(b)
