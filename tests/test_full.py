"""The full disk, end to end on a real server: writes are refused with "file system is full",
removes still work, and once a sync (and the sweep it needs) finds room the tree is writable
again, without a restart and without losing anything committed."""

import pytest

from creepy import errors as E
from creepy.ninep.client import Error9P, SyncClient
from servers import Server9pix
from test_arch import wstat


def stats(c):
    return c.read_file("stats").decode()


def test_full_disk_refuses_writes_allows_removes_and_recovers_without_restart(tmp_path):
    srv = Server9pix(tmp_path, size="3M", bsize="4K", interval=3600)
    srv.start()
    try:
        c = SyncClient(srv.tcp_dial, aname="main", timeout=60)
        chunk = bytes(range(256)) * 64          # 16 KiB
        kept = {}
        err = None
        for i in range(400):
            name = f"root/f{i:03d}"
            try:
                c.write_file(name, chunk * 4)
                kept[name] = chunk * 4
                if i % 10 == 9:
                    assert "synced" in c.cons("sync")
            except Error9P as e:
                err = e
                break
        assert err is not None, "the disk never filled"
        assert err.ename == E.EFULL, err.ename
        assert "full" in stats(c)
        # Writes and creates stay refused while full; the connection keeps working.
        with pytest.raises(Error9P) as e2:
            c.write_file("root/another", b"x" * 10000)
        assert e2.value.ename == E.EFULL
        # Every file written before the refusal reads back whole (the refused file, not in
        # kept, may hold what reached it before the refusal).
        for name, data in kept.items():
            assert c.read_file(name) == data, name
        # Remove half the files; a sync commits the removes and the sweep it then runs finds
        # their blocks free: the tree is writable again.
        names = sorted(kept)
        for name in names[::2]:
            c.remove_path(name)
            del kept[name]
        reply = c.cons("sync")
        assert "synced" in reply, reply
        assert "read-write" in stats(c), stats(c)
        c.write_file("root/after", b"written after the disk was full" * 1000)
        kept["root/after"] = b"written after the disk was full" * 1000
        assert "synced" in c.cons("sync")
        c.close()
        # Nothing committed is lost: kill without a sync and read everything back.
        srv.kill()
        srv.start()
        c = SyncClient(srv.tcp_dial, aname="main", timeout=60)
        for name, data in kept.items():
            assert c.read_file(name) == data, name
        c.close()
    finally:
        srv.stop()


def test_full_disk_only_removes_change_the_tree_and_the_reserve_recovers_it(tmp_path):
    """Issue scenario, end to end: fill the disk with one big file; every metadata change is
    refused, not only writes, so the reserve kept for removes stays whole; a sync alone does
    not make the tree writable (no flip back and forth); removing the big file and syncing
    does; SIGTERM and a restart lose nothing committed."""
    srv = Server9pix(tmp_path, size="3M", bsize="4K", interval=3600)
    srv.start()
    try:
        c = SyncClient(srv.tcp_dial, aname="main", timeout=60)
        c.write_file("root/small", b"kept all along")
        assert "synced" in c.cons("sync")
        chunk = bytes(range(256)) * 256         # 64 KiB
        f = c.walkpath("root")
        c.create(f, "big", 0o644, 1)            # OWRITE
        off, err = 0, None
        while err is None and off < (8 << 20):
            try:
                c.write(f, off, chunk)
                off += len(chunk)
            except Error9P as e:
                err = e
        c.clunk(f)
        assert err is not None and err.ename == E.EFULL, err
        assert "full" in stats(c)
        st = c.stat_path("root/small")
        refused = {
            "rename": lambda: c.rename("root/small", "renamed"),
            "mode": lambda: c.chmod("root/small", 0o600),
            "mtime": lambda: wstat(c, "root/small", mtime=12345),
            "gid": lambda: wstat(c, "root/small", gid=st.uid if st.gid != st.uid else "adm"),
            "truncate": lambda: c.truncate("root/small", 3),
            "create": lambda: c.write_file("root/new", b"x"),
            "mkdir": lambda: c.mkdir("root/newdir"),
        }
        for what, change in refused.items():
            with pytest.raises(Error9P) as e:
                change()
                raise AssertionError(f"{what} was not refused on a full disk")
            assert e.value.ename == E.EFULL, (what, e.value.ename)
        st2 = c.stat_path("root/small")
        assert (st2.name, st2.mode, st2.mtime, st2.gid, st2.length) == \
            (st.name, st.mode, st.mtime, st.gid, st.length)
        # A sync with nothing removed finds no room: the tree stays full.
        c.cons("sync")
        assert "full" in stats(c), stats(c)
        c.remove_path("root/big")
        reply = c.cons("sync")
        assert "synced" in reply and "internal error" not in reply, reply
        assert "read-write" in stats(c), stats(c)
        c.write_file("root/after", b"written once there was room" * 100)
        assert c.read_file("root/small") == b"kept all along"
        c.close()
        srv.stop()                              # SIGTERM: syncs and exits 0
        srv.start()
        c = SyncClient(srv.tcp_dial, aname="main", timeout=60)
        names = {s.name for s in c.listdir("root")}
        assert {"small", "after"} <= names and "big" not in names, names
        assert c.read_file("root/after") == b"written once there was room" * 100
        assert c.read_file("root/small") == b"kept all along"
        c.close()
    finally:
        srv.close()
    from creepy.check import check_disk
    assert check_disk(srv.disk).errors == []
