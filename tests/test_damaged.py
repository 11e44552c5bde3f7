"""Damaged disks at start-up: 9pix, rip and check either serve with a loud warning or refuse
with one line, never a traceback.

Each case damages a copy of one small disk (two superblock copies of different eras, a swept
log, a users file, files in /root) in one way, then runs the real programs on it:
  - `creepy check` must exit as the case says, with no traceback;
  - `creepy 9pix` must either refuse with exactly one line on stderr and a non-zero status, or
    serve, say WARNING in its log when something was wrong, answer a client, and stop cleanly
    on SIGTERM.
"""

import os
import shutil
import subprocess
import sys

import pytest

from creepy.ninep.client import SyncClient
from creepy.store.disk import Disk
from creepy.store.format import (HEADER_SIZE, SUPER, encode_block, encode_super,
                                 read_super_copies)
from creepy.store.store import Store
from servers import DEADLINE, Server9pix, creepy_env

BS = 1024


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return make_base(str(tmp_path_factory.mktemp("base") / "disk"))


def make_base(path):
    """A swept main disk: eras E-1 and E in the two copies, E's root differs from E-1's."""
    disk = Disk.create(path, 2 << 20)
    Store.format(disk, owner=os.environ.get("USER") or "root", bsize=BS)
    st = Store.open(disk)
    users = st.create(st.root, "users", 0o664, st.owner, st.owner, 1)
    owner = st.owner
    st.write(users, 0, f"-1:adm:adm:{owner}\n0:none::\n1:{owner}:{owner}:\n".encode())
    st.changed(users)
    for i in range(6):
        f = st.create(st.root, f"old{i}", 0o644, owner, owner, 1)
        st.write(f, 0, bytes([i]) * 3000)
        st.changed(f)
    st.sync_now()
    st.sweep_now()
    f = st.create(st.root, "newest", 0o644, owner, owner, 1)
    st.write(f, 0, b"the newest commit")
    st.changed(f)
    st.sync_now()
    st.close()
    return path


def supers(path):
    with open(path, "rb") as fp:
        copies, _ = read_super_copies(lambda off, n: (fp.seek(off), fp.read(n))[1])
    return copies                    # newest first


def flip(path, offset):
    with open(path, "r+b") as fp:
        fp.seek(offset)
        b = fp.read(1)
        fp.seek(offset)
        fp.write(bytes([b[0] ^ 0x5A]))


def root_block(sb):
    return sb["root"][11]


def rewrite_super(path, sb, **changes):
    sb = dict(sb, **changes)
    with open(path, "r+b") as fp:
        fp.seek((sb["era"] % 2) * BS)
        fp.write(encode_block(SUPER, sb["era"] % 2, sb["era"], encode_super(sb), BS))


def damage(case, path):
    new, old = supers(path)[:2]
    if case == "truncated":
        os.truncate(path, os.path.getsize(path) // 2)
    elif case == "empty":
        os.truncate(path, 0)
    elif case == "garbage":
        with open(path, "wb") as fp:
            fp.write(os.urandom(1 << 20))
    elif case == "no superblock":
        with open(path, "r+b") as fp:
            fp.write(bytes(2 * BS))
    elif case == "newest superblock":
        flip(path, (new["era"] % 2) * BS + HEADER_SIZE + 5)
    elif case == "older superblock":
        flip(path, (old["era"] % 2) * BS + HEADER_SIZE + 5)
    elif case == "newest superblock geometry":
        rewrite_super(path, new, cursor=[new["nblocks"] + 5, 3])
    elif case == "mark area":
        area = new["sweep"][0]
        flip(path, (2 + area * new["marks"]) * BS + HEADER_SIZE + 1)
    elif case == "newest root":
        flip(path, root_block(new) * BS + HEADER_SIZE + 3)
    elif case == "both roots":
        flip(path, root_block(new) * BS + HEADER_SIZE + 3)
        flip(path, root_block(old) * BS + HEADER_SIZE + 3)
    elif case == "users file":
        st = Store.open(Disk(path))
        ref = st.lookup(st.root, "users").data.root
        st.close()
        flip(path, ref[0] * BS + HEADER_SIZE + 2)
    elif case == "a directory":
        os.unlink(path)
        os.mkdir(path)
    elif case == "worm":
        os.unlink(path)
        Store.format(Disk.create(path, 2 << 20), kind="worm", owner="u", bsize=BS)
    else:
        raise ValueError(case)


# case: (9pix serves?, what its log or error must say, check's exit status, check says)
CASES = {
    "truncated": (False, "only", 2, "only"),
    "empty": (False, "no valid creepy superblock", 2, "no valid"),
    "garbage": (False, "no valid creepy superblock", 2, "no valid"),
    "no superblock": (False, "no valid creepy superblock", 2, "no valid"),
    "newest superblock": (True, "is lost", 1, "damaged: superblock copy"),
    "older superblock": (True, "the next commit writes that copy again", 0, "warning: superblock"),
    "newest superblock geometry": (True, "is lost", 1, "log cursor"),
    "mark area": (True, "mark area", 0, "warning: mark area"),
    "newest root": (True, "is lost; era 2 of the other superblock", 1, "root directory"),
    "both roots": (False, "root directory", 2, "root directory"),
    "users file": (True, "users", 1, "corrupt block"),
    "a directory": (False, "directory", 2, "directory"),
    "worm": (False, "WORM disk", 0, "0 errors"),
}


def run(*args):
    return subprocess.run([sys.executable, "-m", "creepy", *args], capture_output=True,
                          text=True, env=creepy_env(), timeout=DEADLINE,
                          stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_damaged_disk_is_served_with_a_warning_or_refused_in_one_line(tmp_path, base, case):
    serves, says, check_rc, check_says = CASES[case]
    path = str(tmp_path / "disk")
    shutil.copy(base, path)
    damage(case, path)
    r = run("check", path)
    out = r.stdout + r.stderr
    assert "Traceback" not in out, out
    assert r.returncode == check_rc, f"{case}: check exited {r.returncode}:\n{out}"
    assert check_says in out, f"{case}: check said:\n{out}"
    if not serves:
        r = run("9pix", "-a", "-A", "tcp!127.0.0.1!0", "-S", str(tmp_path / "sock"), path)
        assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and says in lines[0], f"{case}: {r.stderr}"
        return
    srv = Server9pix(tmp_path, fmt=False)
    srv.start()
    try:
        log = srv.stderr
        if case != "users file":
            assert "WARNING" in log and says in log, f"{case}: {log}"
        else:
            assert "users" in log and "using the built-in users" in log, log
        c = SyncClient(srv.tcp_dial, aname="main", timeout=30)
        names = {s.name for s in c.listdir("root")}
        stats = c.read_file("stats").decode()
        if "lost" in says:
            assert "newest" not in names, names     # the older commit is served
            assert "warning:" in stats and "lost" in stats, stats
        else:
            assert "newest" in names, names
        # The tree is writable: a new commit goes to the disk (and, with a damaged mark
        # area, the sweep the first allocation needs writes the marks again).
        c.write_file("root/after", b"written after the damage" * 100)
        assert "synced" in c.cons("sync")
        c.close()
    finally:
        srv.stop()
    assert "Traceback" not in srv.stderr, srv.stderr
    r = run("check", path)
    assert r.returncode == (1 if case == "users file" else 0), r.stdout + r.stderr
    assert "Traceback" not in r.stdout + r.stderr, r.stdout + r.stderr
    if case == "mark area":
        assert "mark area" not in r.stdout, r.stdout
