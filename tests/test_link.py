"""link: a new name for a frozen tree; changes under either name copy on write (invariant 8)."""

from creepy.store.disk import Disk
from creepy.store.format import DMDIR
from creepy.store.store import Store
from creepy.check import check_disk
from creepy.errors import DiskFull
from storemodel import DIR, Model, Workload, compare, resolve


def test_linked_tree_survives_changes_syncs_and_sweeps(tmp_path):
    path = str(tmp_path / "disk")
    d = Disk.create(path, 2 << 20)
    Store.format(d, owner="u", bsize=1024)
    st = Store.open(d, cache_bytes=128 << 10)
    m = Model()
    w = Workload(4, st, m, max_write=6000, max_offset=20000)
    for _ in range(120):
        w.step()
    st.sync_now()
    src = st.create(st.root, "src", DMDIR | 0o755, "u", "u", 1)
    m.files[("src",)] = DIR
    for i in range(30):
        f = st.create(src, f"f{i}", 0o644, "u", "u", 1)
        data = bytes([i]) * (i * 700)
        st.write(f, 0, data)
        st.changed(f)
        m.files[("src", f"f{i}")] = data
    st.sync_now()
    snapshot = {k: v for k, v in m.files.items() if k[:1] == ("src",)}
    blocks_before = st.log.avail
    st.link(resolve(st, ("src",)), st.root, "snap", "u", 2)
    st.sync_now()
    assert blocks_before - st.log.avail < 5, "link copied blocks"
    for k, v in snapshot.items():
        m.files[("snap",) + k[1:]] = v
    # change the original heavily, sync, and force sweeps by churning the disk
    for i in range(0, 30, 2):
        f = resolve(st, ("src", f"f{i}"))
        st.write(f, 100, b"changed" * 50)
        st.changed(f)
        old = m.files[("src", f"f{i}")]
        old = old + bytes(max(0, 100 - len(old)))
        m.files[("src", f"f{i}")] = old[:100] + b"changed" * 50 + old[100 + 350:]
    st.unlink(resolve(st, ("src", "f1")), "u", 3)
    del m.files[("src", "f1")]
    sweeps = st.stats["sweeps"]
    # churn files beside src and snap (the workload knows only its own files)
    churned = Model()
    churned.files.update({k: v for k, v in m.files.items() if k[:1] not in (("src",), ("snap",))})
    w = Workload(5, st, churned, max_write=6000, max_offset=20000)
    for _ in range(40):
        for _ in range(20):
            w.step()
        try:
            st.sync_now()
        except DiskFull:
            for p in churned.regular()[:10]:
                st.unlink(resolve(st, p), "u", 4)
                del churned.files[p]
            st.sync_now(use_reserve=True)
    assert st.stats["sweeps"] > sweeps, "the churn did not force a sweep"
    for k, v in churned.files.items():
        m.files[k] = v
    for k in [k for k in m.files if k[:1] not in (("src",), ("snap",)) and k not in churned.files]:
        del m.files[k]
    assert compare(st, m) == []
    again = Store.open(Disk(path))
    for k, v in snapshot.items():
        if v is DIR:
            continue
        n = resolve(again, ("snap",) + k[1:])
        assert again.read(n, 0, n.length) == v, k
    assert check_disk(path).errors == []


def _tree(st, top, names=("f", "d/g")):
    """{name: qid.path} of the files below top, walked from its node."""
    out = {}
    for name in names:
        n = top
        for part in name.split("/"):
            n = st.lookup(n, part)
        out[name] = n.qpath
    return out


def test_a_linked_tree_has_a_qid_space_of_its_own(tmp_path):
    # Kernel caches key inodes by qid.path: the two trees' copies of a file must differ,
    # before and after either changes, across a restart, and under nested links.
    path = str(tmp_path / "disk")
    d = Disk.create(path, 4 << 20)
    Store.format(d, owner="u", bsize=1024)
    st = Store.open(d)
    a = st.create(st.root, "a", DMDIR | 0o755, "u", "u", 1)
    f = st.create(a, "f", 0o644, "u", "u", 1)
    st.write(f, 0, b"a's")
    st.changed(f)
    sub = st.create(a, "d", DMDIR | 0o755, "u", "u", 1)
    st.create(sub, "g", 0o644, "u", "u", 1)
    st.sync_now()
    st.link(a, st.root, "b", "u", 2)
    st.sync_now()
    b = st.lookup(st.root, "b")
    qa, qb = _tree(st, a), _tree(st, b)
    assert qa["f"] == f.path and not set(qa.values()) & set(qb.values())
    assert all(q & ((1 << 40) - 1) == qa[k] for k, q in qb.items())   # the path, shown in b's space
    fb = st.lookup(b, "f")
    st.write(fb, 0, b"b's")
    st.changed(fb)
    new = st.create(b, "new", 0o644, "u", "u", 3)          # made after the link: its own path
    assert new.qpath == new.path
    st.sync_now()
    top = st.create(st.root, "top", DMDIR | 0o755, "u", "u", 5)
    st.sync_now()
    st.link(b, top, "bb", "u", 6)                           # a link of a link
    st.sync_now()
    bb = st.lookup(top, "bb")
    qbb = _tree(st, bb)
    assert not set(qbb.values()) & (set(qa.values()) | set(qb.values()))
    again = Store.open(Disk(path))                          # stable across a restart
    assert _tree(again, again.lookup(again.root, "a")) == qa
    assert _tree(again, again.lookup(again.root, "b")) == qb
    assert _tree(again, again.lookup(again.lookup(again.root, "top"), "bb")) == qbb
    assert check_disk(path).errors == []


def test_a_disk_that_never_linked_opens_and_links(tmp_path):
    # Disks written before qid spaces existed have 14-field entries and no nextspace.
    path = str(tmp_path / "disk")
    d = Disk.create(path, 2 << 20)
    sb = Store.format(d, owner="u", bsize=1024)
    assert "nextspace" not in sb
    st = Store.open(d)
    assert st.nextspace == 1 and len(st.root.entry()) == 14
    a = st.create(st.root, "a", DMDIR | 0o755, "u", "u", 1)
    st.sync_now()
    st.link(a, st.root, "b", "u", 2)
    st.sync_now()
    again = Store.open(Disk(path))
    assert again.nextspace == 2 and again.lookup(again.root, "b").qspace == 1
