"""A directory's entries: a copy-on-write B+tree of LEAF blocks under NODE blocks, keyed by name.

References follow content.py: a frozen reference is (addr, era); a melted one is an MLeaf or an
MNode in memory.  Frozen blocks decode to tuples, (names, entries) for a leaf and (firsts, refs)
for a node, and are never changed: put and delete melt the path from the root to the leaf.

Names sort by code point, which is the order of their UTF-8 bytes.  A node's firsts[i] is a
lower bound of the names under refs[i] (firsts[0] bounds nothing); deleting a name may leave a
bound that no name equals, which is harmless.  Leaves are split in memory when their estimated
encoded size passes a block, and split again at freeze if the exact encoding still does not fit;
a leaf left empty by a delete is dropped, and a root with one child collapses.  Leaves are not
merged: a directory that shrinks keeps sparse leaves until it is rewritten.
"""

from bisect import bisect_left, bisect_right

from creepy.store.format import (E_GID, E_MUID, E_NAME, E_UID, LEAF, NODE, encode_leaf,
                                 encode_node, entry_size)

# Bytes an entry may need beyond its strings: 14 fields of at most 9 bytes, string headers.
ENTRY_FIXED = 103
# Room kept free in a leaf for names (muid) that grow before the next freeze.
LEAF_SLACK = 72
NODE_SLOT_FIXED = 24


def entry_est(e):
    """An upper bound of the entry's encoded size: its strings in UTF-8 and ENTRY_FIXED."""
    s = e[E_NAME] + e[E_UID] + e[E_GID] + e[E_MUID]
    return ENTRY_FIXED + (len(s) if s.isascii() else len(s.encode()))


def slot_est(first):
    return NODE_SLOT_FIXED + len(first.encode())


class MLeaf:
    __slots__ = ("names", "ents", "est")

    def __init__(self, names, ents, est):
        self.names, self.ents, self.est = names, ents, est


class MNode:
    __slots__ = ("firsts", "kids", "est")

    def __init__(self, firsts, kids, est):
        self.firsts, self.kids, self.est = firsts, kids, est


class DirTree:
    __slots__ = ("root", "depth")

    def __init__(self, root=None, depth=0):
        self.root = root
        self.depth = depth

    def frozen(self):
        return self.root is None or type(self.root) is tuple

    def empty(self):
        return self.root is None


def _leaf(st, ref):
    return (ref.names, ref.ents) if type(ref) is MLeaf else st.load_leaf(ref)


def _node(st, ref):
    return (ref.firsts, ref.kids) if type(ref) is MNode else st.load_node(ref)


def _index(firsts, name):
    i = bisect_right(firsts, name) - 1
    return i if i > 0 else 0


def get(st, t, name):
    """The entry named name, or None."""
    ref, d = t.root, t.depth
    if ref is None:
        return None
    while d > 0:
        firsts, kids = _node(st, ref)
        ref = kids[_index(firsts, name)]
        d -= 1
    names, ents = _leaf(st, ref)
    i = bisect_left(names, name)
    if i < len(names) and names[i] == name:
        return ents[i]
    return None


def _melt_leaf(st, ref):
    if type(ref) is MLeaf:
        return ref
    st.note_melt_dir()
    names, ents = st.load_leaf(ref)
    return MLeaf(list(names), list(ents), sum(entry_est(e) for e in ents))


def _melt_node(st, ref):
    if type(ref) is MNode:
        return ref
    st.note_melt_dir()
    firsts, kids = st.load_node(ref)
    return MNode(list(firsts), list(kids), sum(slot_est(f) for f in firsts))


def put(st, t, name, entry):
    """Insert or replace the entry for name."""
    if t.root is None:
        st.note_melt_dir()
        t.root, t.depth = MLeaf([name], [entry], entry_est(entry)), 0
        return
    t.root, sib = _put(st, t.root, t.depth, name, entry)
    if sib is not None:
        st.note_melt_dir()
        left = t.root
        lfirst = "" if t.depth == 0 else left.firsts[0]
        sfirst = sib.names[0] if t.depth == 0 else sib.firsts[0]
        t.root = MNode([lfirst, sfirst], [left, sib], slot_est(lfirst) + slot_est(sfirst))
        t.depth += 1


def _put(st, ref, depth, name, entry):
    """(the new reference for ref, a sibling split off or None).  An entry equal to the one
    already there changes nothing and melts nothing: ref itself comes back."""
    limit = st.cap - LEAF_SLACK
    if depth == 0:
        names, ents = _leaf(st, ref)
        i = bisect_left(names, name)
        if i < len(names) and names[i] == name and ents[i] == entry:
            return ref, None
        leaf = _melt_leaf(st, ref)
        if i < len(leaf.names) and leaf.names[i] == name:
            old = leaf.ents[i]
            if old[E_UID] != entry[E_UID] or old[E_GID] != entry[E_GID] or \
                    old[E_MUID] != entry[E_MUID]:   # the name is the same: only these move it
                leaf.est += entry_est(entry) - entry_est(old)
            leaf.ents[i] = entry
        else:
            leaf.names.insert(i, name)
            leaf.ents.insert(i, entry)
            leaf.est += entry_est(entry)
        if leaf.est <= limit or len(leaf.names) < 2:
            return leaf, None
        st.note_melt_dir()
        h = _half(leaf.ents, entry_est)
        sib = MLeaf(leaf.names[h:], leaf.ents[h:], 0)
        del leaf.names[h:], leaf.ents[h:]
        sib.est = sum(entry_est(e) for e in sib.ents)
        leaf.est -= sib.est
        return leaf, sib
    firsts, kids = _node(st, ref)
    i = _index(firsts, name)
    child, sib = _put(st, kids[i], depth - 1, name, entry)
    if child is kids[i] and sib is None:    # unchanged, or a melted child changed in place
        return ref, None
    node = _melt_node(st, ref)
    node.kids[i] = child
    if sib is None:
        return node, None
    sfirst = sib.names[0] if depth == 1 else sib.firsts[0]
    node.firsts.insert(i + 1, sfirst)
    node.kids.insert(i + 1, sib)
    node.est += slot_est(sfirst)
    if node.est <= st.cap - 8 or len(node.kids) < 4:
        return node, None
    st.note_melt_dir()
    h = len(node.kids) // 2
    nsib = MNode(node.firsts[h:], node.kids[h:], 0)
    del node.firsts[h:], node.kids[h:]
    nsib.est = sum(slot_est(f) for f in nsib.firsts)
    node.est -= nsib.est
    return node, nsib


def _half(items, est):
    total = sum(est(x) for x in items)
    acc = 0
    for i, x in enumerate(items):
        acc += est(x)
        if acc * 2 >= total:
            return max(1, min(i + 1, len(items) - 1))
    return len(items) // 2


def delete(st, t, name):
    """Remove the entry for name; True if it was there."""
    if t.root is None:
        return False
    root, found = _delete(st, t.root, t.depth, name)
    if not found:
        return False
    t.root = root
    if root is None:
        t.depth = 0
    while t.depth > 0 and type(t.root) is MNode and len(t.root.kids) == 1:
        t.root = t.root.kids[0]
        t.depth -= 1
    return True


def _delete(st, ref, depth, name):
    if depth == 0:
        names, _ = _leaf(st, ref)
        i = bisect_left(names, name)
        if i >= len(names) or names[i] != name:
            return ref, False
        leaf = _melt_leaf(st, ref)
        leaf.est -= entry_est(leaf.ents[i])
        del leaf.names[i], leaf.ents[i]
        return (leaf if leaf.names else None), True
    firsts, kids = _node(st, ref)
    i = _index(firsts, name)
    child, found = _delete(st, kids[i], depth - 1, name)
    if not found:
        return ref, False
    node = _melt_node(st, ref)
    if child is None:
        node.est -= slot_est(node.firsts[i])
        del node.firsts[i], node.kids[i]
        if not node.kids:
            return None, True
    else:
        node.kids[i] = child
    return node, True


def items(st, t, after=None):
    """(name, entry) in name order, for names after `after` (all when None)."""
    if t.root is None:
        return
    yield from _items(st, t.root, t.depth, after)


def _items(st, ref, depth, after):
    if depth == 0:
        names, ents = _leaf(st, ref)
        i = 0 if after is None else bisect_right(names, after)
        for j in range(i, len(names)):
            yield names[j], ents[j]
        return
    firsts, kids = _node(st, ref)
    i = 0 if after is None else _index(firsts, after)
    for j in range(i, len(kids)):
        yield from _items(st, kids[j], depth - 1, after)


def freeze(st, t, fz):
    """Generator: write every melted block of the tree (children first); the tree becomes
    frozen when it returns.  It yields every FREEZE_LEAVES leaves it encodes, so that freezing
    a huge directory lets the event loop serve between slices; until it returns, readers see
    the melted tree, which it does not change."""
    if t.root is None or type(t.root) is tuple:
        return
    level = yield from _freeze(st, t.root, t.depth, "", fz)
    while len(level) > 1:
        level = _pack_nodes(st, level, fz)
        t.depth += 1
    t.root = level[0][1]


#: leaves encoded between two yields of a freeze
FREEZE_LEAVES = 16


def _freeze(st, ref, depth, first, fz):
    """Generator returning [(first, frozen ref), ...]: one block, or several when the encoding
    overflowed.  Recursion here is bounded by the B+tree's height, not the file tree's depth."""
    if type(ref) is tuple:
        return [(first, ref)]
    if depth == 0:
        out = []
        names, ents = ref.names, ref.ents
        chunks = _chunks(ents, entry_size, st.cap - 5)
        for k, (a, b) in enumerate(chunks):
            cn, ce = tuple(names[a:b]), tuple(ents[a:b])
            out.append((first if k == 0 else cn[0], fz.put(LEAF, encode_leaf(ce), (cn, ce))))
        return out
    level = []
    for i, (f, kid) in enumerate(zip(ref.firsts, ref.kids)):
        level.extend((yield from _freeze(st, kid, depth - 1, f, fz)))
        if i % FREEZE_LEAVES == FREEZE_LEAVES - 1:
            yield
    level[0] = (first, level[0][1])
    out = _pack_nodes(st, level, fz)
    return out


def _pack_nodes(st, level, fz):
    out = []
    for a, b in _chunks(level, lambda s: slot_est(s[0]), st.cap - 5):
        chunk = level[a:b]
        firsts = [f for f, _ in chunk]
        refs = [r for _, r in chunk]
        payload = encode_node([[f, r[0], r[1]] for f, r in chunk])
        out.append((firsts[0], fz.put(NODE, payload, (firsts, refs))))
    return out


def _chunks(items, size, cap):
    """Split items into runs whose sizes sum to at most cap (at least one item each)."""
    runs = []
    start, acc = 0, 0
    for i, x in enumerate(items):
        s = size(x)
        if acc + s > cap and i > start:
            runs.append((start, i))
            start, acc = i, 0
        acc += s
    runs.append((start, len(items)))
    return runs


def melted(t):
    """How many melted blocks the tree holds."""
    count = 0
    stack = [t.root]
    while stack:
        r = stack.pop()
        if type(r) is MLeaf:
            count += 1
        elif type(r) is MNode:
            count += 1
            stack.extend(k for k in r.kids if type(k) is not tuple)
    return count
