"""A shadow model of the store and a seeded random workload, shared by the store, crash and
sweep tests.  The model is a dict {path tuple: bytes or DIR}; the workload applies the same
operation to a Store and to the model."""

import random

from creepy.ninep.codec import FrameBuffer
from creepy.store.format import DMDIR

DIR = "<dir>"


class Model:
    def __init__(self):
        self.files = {(): DIR}

    def copy(self):
        m = Model()
        m.files = dict(self.files)
        return m

    def dirs(self):
        return [p for p, v in self.files.items() if v is DIR]

    def regular(self):
        return [p for p, v in self.files.items() if v is not DIR]

    def children(self, d):
        return [p for p in self.files if len(p) == len(d) + 1 and p[:len(d)] == d]


def resolve(store, path):
    n = store.root
    for name in path:
        n = store.lookup(n, name)
        if n is None:
            return None
    return n


def name_for(rng):
    k = rng.random()
    if k < 0.05:
        return "n" * rng.randrange(100, 200) + str(rng.randrange(1000))
    if k < 0.1:
        return "ü√" + str(rng.randrange(1000))
    return rng.choice("abcdefgh") + str(rng.randrange(60))


class Workload:
    """Random operations on a store and a model; sync() is left to the caller."""

    def __init__(self, seed, store, model, max_write=40000, max_offset=200000):
        self.rng = random.Random(seed)
        # How a write hands its data over, drawn apart so that the operations stay the same.
        self.how = random.Random(seed ^ 0x6B656570)
        self.store = store
        self.model = model
        self.max_write = max_write
        self.max_offset = max_offset
        self.now = 1

    def write(self, n, off, data):
        """Half the writes let the store keep the data (a read-only view of a frame buffer
        nobody changes: whole blocks of it become kept blocks); the others hand it a bytearray
        scribbled over afterwards, so that a store that kept what it should have copied reads
        the scribble."""
        if self.how.random() < 0.5:
            self.store.write(n, off, memoryview(FrameBuffer(data)).toreadonly(), keep=True)
        else:
            buf = bytearray(data)
            self.store.write(n, off, buf)
            buf[:] = bytes(len(buf))

    def step(self):
        rng, st, m = self.rng, self.store, self.model
        self.now += 1
        op = rng.random()
        dirs = m.dirs()
        files = m.regular()
        if op < 0.25 or not files:
            d = rng.choice(dirs)
            name = name_for(rng)
            if d + (name,) in m.files:
                return
            isdir = rng.random() < 0.2
            n = st.create(resolve(st, d), name, (DMDIR | 0o755) if isdir else 0o644,
                          "u", "g", self.now)
            m.files[d + (name,)] = DIR if isdir else b""
            if not isdir and rng.random() < 0.7:
                data = rng.randbytes(rng.randrange(0, self.max_write))
                self.write(n, 0, data)
                st.changed(n)
                m.files[d + (name,)] = data
        elif op < 0.55:
            p = rng.choice(files)
            n = resolve(st, p)
            off = rng.randrange(0, self.max_offset)
            data = rng.randbytes(rng.randrange(1, self.max_write))
            self.write(n, off, data)
            st.changed(n)
            old = m.files[p]
            if len(old) < off:
                old = old + bytes(off - len(old))
            m.files[p] = old[:off] + data + old[off + len(data):]
        elif op < 0.65:
            p = rng.choice(files)
            n = resolve(st, p)
            old = m.files[p]
            ln = rng.randrange(0, len(old) + 20000)
            st.truncate(n, ln)
            st.changed(n)
            m.files[p] = old[:ln] + bytes(max(0, ln - len(old)))
        elif op < 0.8:
            p = rng.choice(list(m.files))
            if p == ():
                return
            if m.files[p] is DIR and m.children(p):
                return
            n = resolve(st, p)
            st.unlink(n, "u", self.now)
            del m.files[p]
        else:
            p = rng.choice(list(m.files))
            if p == ():
                return
            new = name_for(rng)
            q = p[:-1] + (new,)
            if q == p:
                return
            if q in m.files and (m.files[q] is DIR or m.files[p] is DIR):
                return
            n = resolve(st, p)
            st.rename(n, new, "u", self.now)
            moved = {k: v for k, v in m.files.items() if k[:len(p)] == p}
            for k in moved:
                del m.files[k]
            if q in m.files:
                del m.files[q]
            for k, v in moved.items():
                m.files[q + k[len(p):]] = v


def compare(store, model):
    """A list of differences between the store's tree and the model (empty when equal)."""
    diffs = []
    seen = set()

    def walk(n, path):
        seen.add(path)
        want = model.files.get(path)
        if want is None:
            diffs.append(f"extra {path}")
            return
        if n.isdir:
            if want is not DIR:
                diffs.append(f"{path} is a directory, model has a file")
                return
            names = [name for name, _ in store.dirents(n)]
            if names != sorted(names):
                diffs.append(f"{path} entries out of order")
            for name in names:
                walk(store.lookup(n, name), path + (name,))
        else:
            if want is DIR:
                diffs.append(f"{path} is a file, model has a directory")
                return
            got = store.read(n, 0, n.length + 1)
            if b"".join(store.read(n, 0, n.length + 1, pieces=True)) != got:
                diffs.append(f"{path}: read in pieces differs")
            if n.length != len(want) or got != want:
                diffs.append(f"{path}: {n.length} bytes, model {len(want)}, "
                             f"{'same' if got == want else 'different'} content")

    walk(store.root, ())
    for p in model.files:
        if p not in seen:
            diffs.append(f"missing {p}")
    return diffs
