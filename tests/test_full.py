"""The full disk, end to end on a real server: writes are refused with "file system is full",
removes still work, and once a sync (and the sweep it needs) finds room the tree is writable
again, without a restart and without losing anything committed."""

import pytest

from creepy import errors as E
from creepy.ninep.client import Error9P, SyncClient
from servers import Server9pix


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
