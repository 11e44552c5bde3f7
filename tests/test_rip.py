"""rip (the WORM) and link, end to end on real servers.

- rip refuses every change through any attach but `wormwr`, and `wormwr` refuses users who are
  not the owner or allowed;
- a full WORM disk refuses writes cleanly and keeps serving reads;
- `link` in 9pix: a directory of /root linked to a snapshot name keeps reading as it was while
  its original changes, syncs and sweeps reuse the disk; `creepy check` passes afterwards.
"""

import subprocess
import sys

import pytest

from creepy import errors as E
from creepy.ninep.client import Error9P, SyncClient, nochange
from creepy.ninep.codec import DMDIR, OREAD, ORDWR, OTRUNC
from creepy.ninep.dial import getuser
from servers import DEADLINE, Server9pix, ServerError, creepy_env

ME = getuser()


class RipServer(Server9pix):
    """`creepy rip` on a WORM disk formatted with `creepy fmt -w`, run as Server9pix runs
    9pix (-a on loopback TCP and a Unix socket in the test's directory, unless auth)."""

    def __init__(self, dirpath, *, size="64M", bsize="4K", **kw):
        super().__init__(dirpath, fmt=False, **kw)
        r = subprocess.run([sys.executable, "-m", "creepy", "fmt", "-w", "-s", size, "-b", bsize,
                            self.disk], capture_output=True, text=True, env=creepy_env(),
                           timeout=DEADLINE)
        if r.returncode != 0:
            raise ServerError(f"creepy fmt -w failed ({r.returncode}):\n{r.stdout}{r.stderr}")

    def argv(self):
        a = super().argv()
        a[a.index("9pix")] = "rip"
        return a


def refused(why, fn, *args, **kw):
    """fn(*args, **kw) must fail with the 9P error why."""
    with pytest.raises(Error9P) as e:
        fn(*args, **kw)
    assert e.value.ename == why, f"{fn.__name__}{args}: {e.value.ename!r}, want {why!r}"


def tree_of(c, path=""):
    """{path: (mode, length, mtime, content or None)} of everything under path."""
    out = {}
    for st in c.listdir(path):
        p = f"{path}/{st.name}" if path else st.name
        if st.mode & DMDIR:
            out[p] = (st.mode, 0, st.mtime, None)
            out.update(tree_of(c, p))
        else:
            out[p] = (st.mode, st.length, st.mtime, c.read_file(p))
    return out


# --- rip: read-only but for wormwr -----------------------------------------------------------

def test_rip_refuses_every_change_through_any_attach_but_wormwr(tmp_path):
    srv = RipServer(tmp_path)
    srv.start()
    try:
        with SyncClient(srv.tcp_dial, aname="wormwr", timeout=DEADLINE) as w:
            w.mkdir("t")
            w.mkdir("t/2026")
            w.mkdir("t/2026/1121")
            w.write_file("t/2026/1121/f", b"archived\n")
            w.mkdir("t/2026/1121/empty")
        with SyncClient(srv.tcp_dial, aname="main", timeout=DEADLINE) as m:
            assert "synced" in m.cons("sync")
            before = tree_of(m, "root")
        ro = "read only file system"
        for aname, top in (("", ""), ("root", ""), ("main/active", ""), ("main", "root/")):
            with SyncClient(srv.tcp_dial, aname=aname, timeout=DEADLINE) as c:
                f, d, e = top + "t/2026/1121/f", top + "t/2026/1121", top + "t/2026/1121/empty"
                assert c.read_file(f) == b"archived\n", aname
                refused(ro, c.write_file, f, b"changed")                       # OWRITE|OTRUNC
                refused(ro, c.append, f, b"more")                              # OWRITE
                refused(ro, c.write_file, d + "/new", b"x")                    # create
                refused(ro, c.mkdir, d + "/newdir")
                refused(ro, c.remove_path, f)
                refused(ro, c.remove_path, e)
                refused(ro, c.rename, f, "g")
                refused(ro, c.chmod, f, 0o600)
                refused(ro, c.truncate, f, 0)
                st = nochange()
                st.mtime = 1
                fid = c.walkpath(f)
                refused(ro, c.wstat, fid, st)
                refused(ro, c.open, fid, ORDWR)
                refused(ro, c.open, fid, OREAD | OTRUNC)
                c.open(fid, OREAD)
                c.clunk(fid)
                c.sync_file(f)          # a wstat changing nothing asks for a sync: no change
        refused("unknown tree 'wormwr2'", SyncClient, srv.tcp_dial, aname="wormwr2",
                timeout=DEADLINE)
        with SyncClient(srv.tcp_dial, aname="main", timeout=DEADLINE) as m:
            assert tree_of(m, "root") == before
    finally:
        srv.stop()


def test_wormwr_refuses_users_who_are_not_the_owner_or_allowed(tmp_path):
    srv = RipServer(tmp_path)         # -a on loopback TCP: the attach's uname is believed
    srv.start()
    no = "wormwr attach is for the owner and allowed users only"
    try:
        # unknown users are "none" to the server, and none is never allowed
        refused(no, SyncClient, srv.tcp_dial, uname="glenda", aname="wormwr", timeout=DEADLINE)
        with SyncClient(srv.tcp_dial, aname="wormwr", timeout=DEADLINE) as w:     # the owner
            w.write_file("users", f"adm:adm:adm:{ME}\nsys:sys::\n{ME}:{ME}:{ME}:\n"
                                  f"glenda:glenda:glenda:\n".encode())
            w.mkdir("t")
        cons = SyncClient(srv.tcp_dial, aname="main", timeout=DEADLINE)
        try:
            assert "glenda" in cons.cons("users")
            # a known user is still refused until the console allows her
            refused(no, SyncClient, srv.tcp_dial, uname="glenda", aname="wormwr",
                    timeout=DEADLINE)
            with SyncClient(srv.tcp_dial, uname="glenda", aname="", timeout=DEADLINE) as g:
                assert [st.name for st in g.listdir()] == ["t", "users"]
                refused("read only file system", g.mkdir, "t/glenda")
            with SyncClient(srv.tcp_dial, uname="glenda", aname="main", timeout=DEADLINE) as g:
                refused("permission denied", g.cons, "allow glenda")   # not hers to give
            assert "glenda" in cons.cons("allow glenda")
            with SyncClient(srv.tcp_dial, uname="glenda", aname="wormwr",
                            timeout=DEADLINE) as g:
                g.mkdir("t/2026")
                g.write_file("t/2026/by-glenda", b"archived by an allowed user\n")
                assert g.stat_path("t/2026/by-glenda").uid == "glenda"
            cons.cons("disallow glenda")
            refused(no, SyncClient, srv.tcp_dial, uname="glenda", aname="wormwr",
                    timeout=DEADLINE)
            # a user the users file does not know cannot be allowed at all
            assert "not found" in cons.cons("allow mallory")
            refused(no, SyncClient, srv.tcp_dial, uname="mallory", aname="wormwr",
                    timeout=DEADLINE)
        finally:
            cons.close()
        with SyncClient(srv.tcp_dial, aname="", timeout=DEADLINE) as c:
            assert c.read_file("t/2026/by-glenda") == b"archived by an allowed user\n"
    finally:
        srv.stop()


def test_rip_without_a_refuses_tcp_and_believes_the_unix_socket(tmp_path):
    srv = RipServer(tmp_path, auth=True)
    srv.start()
    try:
        refused("authentication required: use the posted Unix socket, or start the server "
                "with -a", SyncClient, srv.tcp_dial, aname="wormwr", timeout=DEADLINE)
        with SyncClient(srv.unix_dial, aname="wormwr", timeout=DEADLINE) as w:    # the owner
            w.mkdir("t")
        with SyncClient(srv.unix_dial, aname="", timeout=DEADLINE) as c:
            refused("read only file system", c.mkdir, "t/x")
    finally:
        srv.stop()


# --- a full WORM -----------------------------------------------------------------------------

def check_disk(path):
    r = subprocess.run([sys.executable, "-m", "creepy", "check", path], capture_output=True,
                       text=True, env=creepy_env(), timeout=DEADLINE)
    return r.returncode, r.stdout + r.stderr


def stats_number(c, key, word):
    """Word number `word` of the /stats line that starts with key, as an int."""
    for ln in c.read_file("stats").decode().splitlines():
        if ln.startswith(key + ":"):
            return int(ln.split()[word])
    raise AssertionError(f"no {key}: line in /stats")


def blocks_free(cons):
    """The free blocks /stats reports ("blocks:\tN used M free")."""
    return stats_number(cons, "blocks", 3)


def test_a_full_worm_refuses_writes_cleanly_and_keeps_serving_reads(tmp_path):
    srv = RipServer(tmp_path, size="4M", bsize="4K")
    srv.start()
    try:
        w = SyncClient(srv.tcp_dial, aname="wormwr", timeout=DEADLINE)
        cons = SyncClient(srv.tcp_dial, aname="main", timeout=DEADLINE)
        w.mkdir("t")
        chunk = bytes(range(256)) * 80          # 20 KiB
        kept = {}
        full = None
        for i in range(400):
            name = f"t/f{i:03d}"
            data = chunk[i % 256:] + chunk[:i % 256]
            try:
                w.write_file(name, data)
            except Error9P as e:
                full = ("write", e.ename)
                break
            kept[name] = data
            if i % 8 == 7:
                reply = cons.cons("sync")
                if "synced" not in reply:
                    full = ("sync", reply.strip())
                    break
        assert full is not None, "the WORM never filled"
        assert E.EFULL in full[1], full
        # Writes and creates are refused, cleanly: an error, and the connection lives on.
        refused(E.EFULL, w.write_file, "t/another", b"x" * 10000)
        refused(E.EFULL, w.mkdir, "t/dir")
        refused(E.EFULL, w.append, sorted(kept)[0], b"more")
        assert "full" in cons.read_file("stats").decode()
        # Everything written before the refusal reads back, through wormwr and attach "".
        for name, data in kept.items():
            assert w.read_file(name) == data, name
        with SyncClient(srv.tcp_dial, aname="", timeout=DEADLINE) as r:
            names = {f"t/{st.name}" for st in r.listdir("t")}
            assert set(kept) <= names, sorted(set(kept) - names)
            for name, data in kept.items():
                assert r.read_file(name) == data, name
        # A sync answers (the dirty data was committed to make room, or fits), frees nothing
        # (a WORM never reuses a block), and what did not fit still does not.
        free = blocks_free(cons)
        reply = cons.cons("sync")
        assert "synced" in reply or E.EFULL in reply, reply
        assert blocks_free(cons) <= free
        refused(E.EFULL, w.write_file, "t/another", b"x" * 100000)
        # Small files still fit in the last blocks; fill them to the brim, where even a small
        # create is refused right after a sync.
        for i in range(200):
            name, data = f"t/small{i:03d}", b"%d\n" % i
            try:
                w.write_file(name, data)
            except Error9P as e:
                assert e.ename == E.EFULL, e.ename
                cons.cons("sync")
                try:
                    w.write_file(name, data)
                except Error9P as e:
                    assert e.ename == E.EFULL, e.ename
                    break
            kept[name] = data
        else:
            raise AssertionError("small files never filled the WORM")
        assert blocks_free(cons) < 8
        for name, data in kept.items():
            assert w.read_file(name) == data, name
        w.close()
        cons.close()
    finally:
        srv.stop()
    # Nothing written before the refusal is lost (the tree never holds more dirty data than
    # the disk can take), and the WORM checks clean.
    rc, out = check_disk(srv.disk)
    assert rc == 0, out
    srv.start()
    try:
        with SyncClient(srv.tcp_dial, aname="", timeout=DEADLINE) as r:
            for name, data in kept.items():
                assert r.read_file(name) == data, name
        with SyncClient(srv.tcp_dial, aname="wormwr", timeout=DEADLINE) as w:
            refused(E.EFULL, w.write_file, "t/after-restart", b"y" * 100000)
    finally:
        srv.stop()


# --- link in 9pix ----------------------------------------------------------------------------

def sweeps(c):
    """The sweep count /stats reports ("sweeps:\\tN last ...")."""
    return stats_number(c, "sweeps", 1)


def test_link_in_9pix_keeps_the_snapshot_as_it_was_through_changes_syncs_and_sweeps(tmp_path):
    srv = Server9pix(tmp_path, size="8M", bsize="4K")
    srv.start()
    try:
        c = SyncClient(srv.tcp_dial, aname="main", timeout=DEADLINE)
        c.mkdir("root/src")
        c.mkdir("root/src/sub")
        for i in range(12):
            c.write_file(f"root/src/f{i:02d}", bytes([65 + i]) * (i * 3000 + 1))
        c.write_file("root/src/sub/deep", b"deep\n" * 2000)
        assert "synced" in c.cons("sync")
        reply = c.cons("link src snap")
        assert reply.strip() == "linked src snap", reply
        snap = tree_of(c, "root/snap")
        assert {k.replace("root/src/", "root/snap/", 1): v[1:] for k, v in
                tree_of(c, "root/src").items()} == {k: v[1:] for k, v in snap.items()}
        # Change the original: rewrite, extend, truncate, remove, create, rename.
        c.write_file("root/src/f01", b"rewritten\n")
        c.append("root/src/f02", b"appended" * 500)
        c.truncate("root/src/f03", 10)
        c.remove_path("root/src/f04")
        c.remove_path("root/src/sub/deep")
        c.remove_path("root/src/sub")
        c.write_file("root/src/new", b"new in src\n")
        c.rename("root/src/f05", "f05.renamed")
        assert "synced" in c.cons("sync")
        assert tree_of(c, "root/snap") == snap
        # Churn the rest of the disk until the log has gone round several times: every lap
        # starts with a sweep, which must keep the snapshot's blocks.
        start = sweeps(c)
        seen = start
        junk = bytes(range(256)) * 1024        # 256 KiB
        for i in range(200):
            c.write_file(f"root/junk{i % 6}", junk[i % 256:] + junk[:i % 256])
            if i % 3 == 2:
                reply = c.cons("sync")
                assert "synced" in reply, reply
            now = sweeps(c)
            if now != seen:
                seen = now
                assert tree_of(c, "root/snap") == snap, f"after sweep {now}"
                rc, out = check_disk(srv.disk)      # read-only: the disk may be in use
                assert rc == 0, f"after sweep {now}: {out}"
                if now - start >= 3:
                    break
        assert seen - start >= 3, f"the churn forced only {seen - start} sweeps"
        assert c.read_file("root/src/f01") == b"rewritten\n"
        assert "f05.renamed" in [st.name for st in c.listdir("root/src")]
        c.close()
    finally:
        srv.stop()
    rc, out = check_disk(srv.disk)
    assert rc == 0, out
    srv.start()
    try:
        with SyncClient(srv.tcp_dial, aname="main", timeout=DEADLINE) as c:
            assert tree_of(c, "root/snap") == snap
    finally:
        srv.stop()


def test_a_write_larger_than_the_free_log_sweeps_instead_of_calling_the_disk_full(tmp_path):
    """A write that needs more blocks than the log has free must start the sweep that frees
    them (it used to ask the sweep for room for what was already dirty only, find enough, and
    call the disk full with a disk of garbage)."""
    srv = Server9pix(tmp_path, size="4M", bsize="4K")
    srv.start()
    try:
        with SyncClient(srv.tcp_dial, aname="main", timeout=DEADLINE) as c:
            big = bytes(range(256)) * 2048          # 512 KiB: 128 blocks, a seventh of the disk
            for i in range(40):                     # 20 MiB through a 4 MiB disk
                c.write_file("root/big", big[i:] + big[:i])
                assert "synced" in c.cons("sync")
            assert sweeps(c) >= 3
            assert c.read_file("root/big") == big[39:] + big[:39]
    finally:
        srv.stop()
