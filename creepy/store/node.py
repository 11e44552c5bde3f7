"""A file or directory loaded in memory.

A Node is the live version of one directory entry: its metadata, and either a Content (a file's
data tree) or a DirTree (a directory's entries) plus the children loaded from it.  Nodes are the
truth while loaded; the entry in the parent's DirTree is rewritten from the node at freeze.

A node is *dirty* when its entry must be written again; a dirty node's parent lists it in
`dirtykids`, and so on up to the root, so a freeze visits only what changed.  A node carries the
era of its last change; a directory's era is the newest era below it (DESIGN invariant 6).
"""

from creepy.store.content import Content
from creepy.store.dirtree import DirTree
import xxhash

from creepy.store.format import DMDIR, E_PATH, E_QSPACE, ENTRY_FIELDS, QPATH_BITS, QSPACE_DERIVED


class Node:
    __slots__ = ("name", "path", "mode", "uid", "gid", "muid", "atime", "mtime", "length",
                 "vers", "era", "parent", "data", "dir", "live", "dirtykids", "dirty", "refs",
                 "removed", "opens", "statcache", "qspace", "qchain", "qpath", "__weakref__")

    def __init__(self, name, path, mode, uid, gid, muid, atime, mtime, length, vers, era,
                 addr=0, rera=0, depth=0, qspace=0, parent=None):
        self.name = name
        self.path = path
        self.mode = mode
        self.uid = uid
        self.gid = gid
        self.muid = muid
        self.atime = atime
        self.mtime = mtime
        self.length = length
        self.vers = vers
        self.era = era
        self.parent = parent
        root = (addr, rera) if addr else None
        if mode & DMDIR:
            self.dir = DirTree(root, depth)
            self.data = None
            self.live = {}
            self.dirtykids = set()
        else:
            self.dir = None
            self.data = Content(root, depth)
            self.live = None
            self.dirtykids = None
        self.dirty = False
        self.refs = 0           # holders outside the tree (fids): a held node is never evicted
        self.removed = False
        self.opens = 0          # the file-system layer's count of opens (DMEXCL, ORCLOSE)
        self.statcache = None   # the file-system layer's last stat of this node
        self.qspace = qspace    # on a link's top: the qid space it opened (format.py)
        self.place(parent)

    def place(self, parent):
        """Derive the qid space of n below parent: the links above it (qchain: (qspace,
        top's path) of each, outermost first) and its qid.path (qpath)."""
        chain = parent.qchain if parent is not None else ()
        if self.qspace:
            chain = chain + ((self.qspace, self.path),)
        self.qchain = chain
        self.qpath = qpath_in(self.path, chain)

    @classmethod
    def from_entry(cls, e, parent):
        if not ENTRY_FIELDS <= len(e) <= E_QSPACE + 1:
            raise ValueError("bad entry")
        return cls(*e, parent=parent)

    @property
    def isdir(self):
        return self.dir is not None

    def tree(self):
        return self.dir if self.dir is not None else self.data

    def entry(self):
        """The directory entry as it would be written now (root 0 while the tree is melted),
        a tuple (format.py lists the fields)."""
        t = self.tree()
        root = t.root
        if type(root) is tuple:
            addr, rera = root
        else:
            addr = rera = 0
        e = (self.name, self.path, self.mode, self.uid, self.gid, self.muid, self.atime,
             self.mtime, self.length, self.vers, self.era, addr, rera, t.depth)
        return e + (self.qspace,) if self.qspace else e

    def pathname(self):
        parts = []
        n = self
        while n is not None and n.parent is not None:
            parts.append(n.name)
            n = n.parent
        return "/" + "/".join(reversed(parts))

    def __repr__(self):
        return f"<Node {self.pathname()} path={self.path} era={self.era}{' dirty' if self.dirty else ''}>"


def qpath_in(path, chain):
    """The qid.path of a file of this path below the links of chain (format.py, entry
    field qspace): its path when it came with none of them, else the path in the space of
    the one link it came with, or in a space derived from all of them."""
    if not chain:
        return path
    spaces = [space for space, base in chain if path < base]
    if not spaces:
        return path
    if len(spaces) == 1:
        space = spaces[0]
    else:
        space = QSPACE_DERIVED | (xxhash.xxh64_intdigest(repr(spaces)) % QSPACE_DERIVED)
    return (space << QPATH_BITS) | path


def qpath_of_entry(d, e):
    """The qid.path of the entry e of directory d, without loading it."""
    path = e[E_PATH]
    chain = d.qchain
    if len(e) > E_QSPACE and e[E_QSPACE]:
        chain = chain + ((e[E_QSPACE], path),)
    return qpath_in(path, chain) if chain else path
