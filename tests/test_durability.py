"""Durability through the real server, with the independent client (py9p, from p9fs).

Format a 256 MiB disk, serve it, make a tree of 1,000 files in 50 directories holding 20 MiB,
`sync` through /cons, snapshot the tree (every byte, every stat), change it (create, modify,
truncate, chmod, remove, rename), SIGKILL the server and restart it on the same disk: the tree is
exactly the snapshot.  The server runs with -i 3600, so no periodic sync happens in between;
/stats shows that no commit happened after ours.  `pytest -s` shows the timings.
"""

import hashlib
import random
import re
import time

from creepy.fs.fs import unix_user
from peers import DMAPPEND, DMDIR, DMEXCL, OREAD, ORDWR, OTRUNC, OWRITE, connect
from servers import Server9pix

OWNER = unix_user()
SEED = 20240517
NDIRS, NFILES, TOTAL = 50, 1000, 20 << 20
MSIZE = 65536 + 24


def plan(rng):
    """50 directories (10 at the top, 4 below each) and 1,000 files: path, perm, data."""
    dirs = []
    for t in range(10):
        dirs.append((f"t{t}", rng.choice([0o755, 0o775, 0o750])))
        for s in range(4):
            dirs.append((f"t{t}/s{s}", rng.choice([0o755, 0o750, 0o700])))
    assert len(dirs) == NDIRS
    sizes = [rng.choice([0, 1, 100, 16383, 16384, 16385, 32768, 49153])
             if i % 10 == 0 else rng.randint(0, 40000) for i in range(NFILES)]
    short = TOTAL - sum(sizes)
    big = [i for i in range(NFILES) if i % 10 == 5][:8]      # a few large files take the rest
    for k, i in enumerate(big):
        sizes[i] += short // len(big) + (short % len(big) if k == 0 else 0)
    assert sum(sizes) == TOTAL and min(sizes) >= 0
    files = []
    for i in range(NFILES):
        d = dirs[i % NDIRS][0]
        perm = rng.choice([0o644, 0o600, 0o640, 0o444, 0o664, 0o755, 0o666])
        if i % 97 == 3:
            perm |= DMAPPEND
        elif i % 89 == 4:
            perm |= DMEXCL
        files.append((f"{d}/f{i:04d}-{sizes[i]}", perm, rng.randbytes(sizes[i])))
    return dirs, files


def write_all(p, f, data):
    off = 0
    while off < len(data):
        off += p.write(f, off, data[off:off + p.iounit])


def snapshot(p, path=""):
    """path -> (qid type, qid path, mode, uid, gid, muid, mtime, length, sha256 of the bytes)
    for the directory at path and everything below it."""
    out = {}
    st = p.stat_path(path) if path else p.stat(p.root)
    out[path or "/"] = (st.qid.type, st.qid.path, st.mode, st.uid, st.gid, st.muid, st.mtime,
                        st.length, None)
    for e in p.listdir(path):
        sub = f"{path}/{e.name}" if path else e.name
        if e.mode & DMDIR:
            out.update(snapshot(p, sub))
            continue
        f = p.walk(sub)
        p.open(f, OREAD)
        data = p.readall(f)
        p.clunk(f)
        assert len(data) == e.length, sub
        out[sub] = (e.qid.type, e.qid.path, e.mode, e.uid, e.gid, e.muid, e.mtime, e.length,
                    hashlib.sha256(data).hexdigest())
    return out


def console(server, command, want):
    """Run a console command with py9p the plain way: attach "main", open /cons ORDWR, write the
    line, read until the reply holds `want`.  Returns the text read."""
    with connect(server, "tcp", "py9p", OWNER, "main") as m:
        f = m.walk("cons")
        m.open(f, ORDWR)
        assert m.write(f, 0, (command + "\n").encode()) == len(command) + 1
        text = ""
        while want not in text:
            text += m.read(f, 0, 8192).decode()
        m.clunk(f)
    return text


def committed_era(server):
    with connect(server, "tcp", "py9p", OWNER, "main") as m:
        text = m.read_file("stats").decode()
    return int(re.search(r"^era:\t\d+ \(committed (\d+)\)$", text, re.M).group(1))


def diff(a, b):
    lines = []
    for k in sorted(set(a) | set(b)):
        if a.get(k) != b.get(k):
            lines.append(f"{k}: {a.get(k)} != {b.get(k)}")
    return "\n".join(lines[:40]) + (f"\n... {len(lines)} differences" if len(lines) > 40 else "")


def test_sync_then_sigkill_keeps_exactly_the_synced_tree(tmp_path):
    rng = random.Random(SEED)
    dirs, files = plan(rng)
    with Server9pix(tmp_path) as srv:         # creepy fmt -s 256M -b 16K, 9pix -a ... -i 3600
        srv.start()
        p = connect(srv, "tcp", "py9p", OWNER, msize=MSIZE)

        # --- the tree: 50 directories, 1,000 files, 20 MiB ------------------------------------
        t0 = time.perf_counter()
        for d, perm in dirs:
            p.mkdir(d, perm)
        for i, (path, perm, data) in enumerate(files):
            parent, name = path.rsplit("/", 1)
            f = p.walk(parent)
            p.create(f, name, perm, OWRITE)
            write_all(p, f, data)
            if i % 10 == 1:
                p.wstat(f, mtime=1_000_000_000 + i)   # explicit mtimes survive exactly
            if i % 20 == 2:
                p.wstat(f, gid="adm")                  # and groups
            p.clunk(f)
        write_s = time.perf_counter() - t0

        # --- sync through /cons ----------------------------------------------------------------
        t0 = time.perf_counter()
        reply = console(srv, "sync", "synced")
        sync_s = time.perf_counter() - t0
        said = re.search(r"synced era \d+ \(\d+ blocks.*", reply)
        assert said, reply
        synced = committed_era(srv)

        t0 = time.perf_counter()
        before = snapshot(p)
        snap_s = time.perf_counter() - t0
        assert len(before) == 1 + NDIRS + NFILES
        for path, perm, data in files:               # the snapshot is what we wrote
            assert before[path][7] == len(data)
            assert before[path][8] == hashlib.sha256(data).hexdigest(), path
        assert sum(before[path][7] for path, _, _ in files) == TOTAL

        # --- changes after the sync: all of them must be lost --------------------------------
        doomed = [path for path, _, _ in files if path.startswith("t9/s3/")]
        victims = rng.sample(range(NFILES), 80)
        plain = [i for i in victims if not files[i][1] & (DMAPPEND | DMEXCL)
                 and files[i][1] & 0o200 and files[i][0] not in doomed]
        assert len(plain) > 40
        modify, remove, trunc, chmod = plain[:15], plain[15:30], plain[30:35], plain[35:40]
        for i in modify:
            path, _, data = files[i]
            f = p.walk(path)
            if i % 2:
                p.open(f, OWRITE)
                p.write(f, len(data) // 2, b"changed after the sync")
            else:
                p.open(f, OWRITE | OTRUNC)
                p.write(f, 0, b"rewritten")
            p.clunk(f)
        for i in remove:
            p.remove_path(files[i][0])
        for i in trunc:
            p.wstat_path(files[i][0], length=7)
        for i in chmod:
            p.wstat_path(files[i][0], mode=0o600, mtime=42)
        renamed = plain[40]
        old = files[renamed][0]
        p.wstat_path(old, name=old.rsplit("/", 1)[1] + ".renamed")
        for k in range(30):
            p.write_file(f"{dirs[k % NDIRS][0]}/new{k}", rng.randbytes(rng.randint(0, 30000)))
        p.mkdir("newdir")
        for k in range(5):
            p.write_file(f"newdir/n{k}", b"new" * k)
        assert len(doomed) == NFILES // NDIRS
        for path in doomed:
            p.remove_path(path)
        p.remove_path("t9/s3")                        # a whole directory, emptied first

        after_changes = snapshot(p)
        changed = {k for k in set(before) | set(after_changes)
                   if before.get(k) != after_changes.get(k)}
        touched = {files[i][0] for i in modify + remove + trunc + chmod + [renamed]}
        touched |= {old + ".renamed", "newdir", "t9/s3", *doomed}
        touched |= {f"newdir/n{k}" for k in range(5)}
        touched |= {f"{dirs[k % NDIRS][0]}/new{k}" for k in range(30)}
        files_changed = {k for k in changed if k in touched or k not in dict(dirs) | {"/": 0}}
        assert files_changed == touched, "the changes did not take:\n" + diff(
            {k: before.get(k) for k in touched}, {k: after_changes.get(k) for k in touched})
        assert committed_era(srv) == synced, "something synced after our sync"
        p.close()

        # --- SIGKILL, restart on the same disk ------------------------------------------------
        assert srv.kill() < 0
        srv.start()
        restart_s = srv.start_s
        with connect(srv, "tcp", "py9p", OWNER, msize=MSIZE) as q:
            t0 = time.perf_counter()
            after = snapshot(q)
            check_s = time.perf_counter() - t0
        assert after == before, "tree after restart != tree at the sync:\n" + diff(before, after)
        with connect(srv, "unix", "ours", OWNER) as o:        # and our client agrees
            assert snapshot(o) == before
        srv.stop()

    mib = TOTAL / (1 << 20)
    print(f"\ndurability: {NFILES} files in {NDIRS} directories, {mib:.0f} MiB, py9p msize "
          f"{MSIZE}:\n"
          f"  write the tree   {write_s:7.2f} s  ({mib / write_s:.1f} MiB/s)\n"
          f"  sync via /cons   {sync_s:7.3f} s  ({said.group(0)})\n"
          f"  snapshot         {snap_s:7.2f} s\n"
          f"  restart (SIGKILL'd server to serving)  {restart_s:7.3f} s\n"
          f"  check after restart {check_s:7.2f} s")


def test_sigterm_syncs_before_exiting(tmp_path):
    """The other way down: SIGTERM syncs, so what was written is there after a restart."""
    with Server9pix(tmp_path) as srv:
        srv.start()
        with connect(srv, "unix", "py9p", OWNER) as p:
            p.mkdir("d")
            p.write_file("d/f", b"written, never synced by hand")
            before = snapshot(p)
        srv.stop()                                   # SIGTERM: exits 0 after a sync
        assert "signal SIGTERM: syncing" in srv.stderr
        srv.start()
        with connect(srv, "unix", "py9p", OWNER) as p:
            assert snapshot(p) == before
