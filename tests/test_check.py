"""creepy check finds what verified reads cannot: structure that is wrong but well formed."""

import subprocess
import sys

from creepy.check import check_disk
from creepy.store.disk import Disk
from creepy.store.format import PTRBLK, decode_block, decode_ptrs, encode_block, encode_ptrs
from creepy.store.store import Store


def disk_with_file(tmp_path, name="disk"):
    path = str(tmp_path / name)
    d = Disk.create(path, 4 << 20)
    Store.format(d, owner="u", bsize=1024)
    st = Store.open(d)
    f = st.create(st.root, "f", 0o644, "u", "u", 1)
    st.write(f, 0, b"x" * 5000)
    st.changed(f)
    st.sync_now()
    return path, st, f.data.root


def rewrite_ptrs(path, ref, change):
    addr, era = ref
    with open(path, "r+b") as fp:
        fp.seek(addr * 1024)
        raw = fp.read(1024)
        _, _, payload = decode_block(raw, addr, PTRBLK)
        ptrs = list(decode_ptrs(addr, payload, len(payload) // 16))
        change(ptrs)
        fp.seek(addr * 1024)
        fp.write(encode_block(PTRBLK, addr, era, encode_ptrs(ptrs), 1024))


def test_check_passes_a_good_disk_and_exits_zero(tmp_path):
    path, _, _ = disk_with_file(tmp_path)
    r = subprocess.run([sys.executable, "-m", "creepy", "check", path], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "0 errors" in r.stdout and "1 files" in r.stdout


def test_check_finds_a_block_used_twice_in_one_file(tmp_path):
    path, _, root = disk_with_file(tmp_path)

    def twice(p):
        p[1] = p[0]
    rewrite_ptrs(path, root, twice)
    errs = check_disk(path).errors
    assert any("twice" in m and where == "/f" for _, m, where in errs), errs
    r = subprocess.run([sys.executable, "-m", "creepy", "check", path], capture_output=True,
                       text=True)
    assert r.returncode == 1 and "twice" in r.stdout


def test_check_finds_a_pointer_outside_the_log_and_a_live_block_the_log_would_reuse(tmp_path):
    path, st, root = disk_with_file(tmp_path)

    def outside(p):
        p[2] = (1, p[2][1])          # a superblock address
    rewrite_ptrs(path, root, outside)
    assert any("outside the log" in m for _, m, _ in check_disk(path).errors)

    path2, st2, root2 = disk_with_file(tmp_path, "disk2")
    ahead = st2.log.cursor + 3       # a block the log has not handed out yet

    def future(p):
        p[0] = (ahead, p[0][1])
    rewrite_ptrs(path2, root2, future)
    errs = check_disk(path2).errors
    assert any(a == ahead for a, _, _ in errs), errs


def test_check_counts_free_and_garbage_as_the_allocator_does_after_sweeps(tmp_path):
    """check's free is the log's own free count (the marks of the last sweep taken into
    account, not the whole lap), and used = live + garbage, after every sync of a churn that
    sweeps many times."""
    from storemodel import Model
    from test_sweep import TINY, churn, tiny_disk

    path = tiny_disk(tmp_path)
    st = Store.open(Disk(path), cache_bytes=TINY["cache"])
    seen = []

    def after(st, m):
        rep = check_disk(path)
        assert rep.errors == [] and rep.damaged == []
        assert rep.free == st.log.avail, (st.stats["sweeps"], rep.free, st.log.avail)
        assert rep.blocks + rep.garbage == st.log.used()
        seen.append(st.stats["sweeps"])

    churn(st, Model(), 4, syncs=120, on_commit=after)
    assert seen[-1] >= 5, "the churn did not sweep"
