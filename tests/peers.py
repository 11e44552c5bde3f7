"""Two 9P clients behind one small interface, so a test runs unchanged with either.

`Py9pPeer` is the independent client: py9p as shipped in the PyPI package p9fs (its Client
speaks over any connected socket; we use its message-level calls `_walk`, `_open`, ... with
fids of our own, since its path-level calls share one fid).  `OursPeer` is creepy's own
SyncClient.  Both raise `P9Error(ename)` for an Rerror, with the server's string as text, and
return stats as `St` with str fields and a plain (type, vers, path) qid.
"""

from collections import namedtuple
import itertools

from py9p import py9p

from creepy.ninep.client import Error9P, SyncClient, nochange

OREAD, OWRITE, ORDWR, OEXEC, OTRUNC, ORCLOSE = 0, 1, 2, 3, 0x10, 0x40
DMDIR, DMAPPEND, DMEXCL = 0x80000000, 0x40000000, 0x20000000
QTDIR, QTAPPEND, QTEXCL = 0x80, 0x40, 0x20
NOFID = 0xFFFFFFFF

St = namedtuple("St", "type dev qid mode atime mtime length name uid gid muid")
Q = namedtuple("Q", "type vers path")

WSTAT_FIELDS = ("mode", "atime", "mtime", "length", "name", "uid", "gid", "muid")


class P9Error(Exception):
    def __init__(self, ename):
        super().__init__(ename)
        self.ename = ename


def _split(path):
    return [p for p in path.split("/") if p]


class Peer:
    """What both clients offer; subclasses supply the per-message calls."""

    kind = "?"

    # path helpers, built on the per-message calls
    def walk(self, path, fid=None):
        """A new fid for path (from the attach root or fid); P9Error if it does not exist."""
        names = _split(path) if isinstance(path, str) else list(path)
        newfid = self.newfid()
        start = self.root if fid is None else fid
        for i in range(0, max(len(names), 1), 16):      # at most 16 names per Twalk
            step = names[i:i + 16]
            qids = self.walk_qids(start, newfid, step)
            if len(qids) != len(step):
                if start == newfid:
                    self.clunk(newfid)
                raise P9Error("file does not exist")
            start = newfid
        return newfid

    def readall(self, fid, count=None):
        count = count or self.iounit
        out = []
        off = 0
        while True:
            b = self.read(fid, off, count)
            if not b:
                return b"".join(out)
            out.append(b)
            off += len(b)

    def writeall(self, fid, off, data):
        data = bytes(data)
        n = 0
        while n < len(data):
            k = self.write(fid, off + n, data[n:n + self.iounit])
            if k <= 0:
                raise P9Error("short write")
            n += k
        return n

    def read_file(self, path):
        f = self.walk(path)
        try:
            self.open(f, OREAD)
            return self.readall(f)
        finally:
            self.clunk(f)

    def write_file(self, path, data, perm=0o644):
        """Create (or truncate) path and write data."""
        names = _split(path)
        d = self.walk(names[:-1])
        try:
            self.create(d, names[-1], perm, OWRITE)
        except P9Error as e:
            self.clunk(d)
            if e.ename != "file already exists":
                raise
            d = self.walk(names)
            self.open(d, OWRITE | OTRUNC)
        try:
            self.writeall(d, 0, data)
        finally:
            self.clunk(d)

    def mkdir(self, path, perm=0o755):
        names = _split(path)
        d = self.walk(names[:-1])
        try:
            qid, _ = self.create(d, names[-1], DMDIR | perm, OREAD)
        finally:
            self.clunk(d)
        return qid

    def stat_path(self, path):
        f = self.walk(path)
        try:
            return self.stat(f)
        finally:
            self.clunk(f)

    def wstat_path(self, path, **fields):
        f = self.walk(path)
        try:
            self.wstat(f, **fields)
        finally:
            self.clunk(f)

    def remove_path(self, path):
        self.remove(self.walk(path))

    def exists(self, path):
        try:
            self.clunk(self.walk(path))
            return True
        except P9Error:
            return False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Py9pPeer(Peer):
    """py9p's Client (from p9fs) over a connected socket."""

    kind = "py9p"

    def __init__(self, sock, user, aname="", msize=8192):
        self.client = py9p.Client(sock, py9p.Credentials(user), msize=msize, aname=aname)
        self.root = py9p.Client.ROOT
        self.msize = self.client.msize
        self.iounit = self.msize - py9p.IOHDRSZ
        self._fids = itertools.count(1000)

    def newfid(self):
        return next(self._fids)

    def _call(self, fn, *args):
        try:
            return fn(*args)
        except py9p.RpcError as e:
            ename = e.args[0]
            raise P9Error(ename.decode("utf-8", "replace") if isinstance(ename, bytes)
                          else str(ename)) from None

    @staticmethod
    def _qid(q):
        return Q(q.type & 0xFF, q.vers, q.path)   # py9p decodes the type byte as signed

    @classmethod
    def _st(cls, d):
        s = lambda b: b.decode() if isinstance(b, bytes) else b
        return St(d.type, d.dev, cls._qid(d.qid), d.mode, d.atime, d.mtime, d.length,
                  s(d.name), s(d.uid), s(d.gid), s(d.muid))

    def walk_qids(self, fid, newfid, names):
        return [self._qid(q) for q in self._call(self.client._walk, fid, newfid, names).wqid]

    def open(self, fid, mode):
        r = self._call(self.client._open, fid, mode)
        return self._qid(r.qid), r.iounit

    def create(self, fid, name, perm, mode):
        r = self._call(self.client._create, fid, name, perm, mode)
        return self._qid(r.qid), r.iounit

    def read(self, fid, off, count):
        return self._call(self.client._read, fid, off, count).data

    def write(self, fid, off, data):
        return self._call(self.client._write, fid, off, bytes(data)).count

    def clunk(self, fid):
        self._call(self.client._clunk, fid)

    def remove(self, fid):
        self._call(self.client._remove, fid)

    def stat(self, fid):
        st = self._call(self.client._stat, fid).stat
        assert len(st) == 1, st
        return self._st(st[0])

    def wstat(self, fid, **fields):
        unknown = set(fields) - set(WSTAT_FIELDS)
        assert not unknown, unknown
        d = py9p.Dir(0, 0xFFFF, 0xFFFFFFFF, py9p.Qid(0xFF, 0xFFFFFFFF, 0xFFFFFFFFFFFFFFFF),
                     fields.get("mode", 0xFFFFFFFF), fields.get("atime", 0xFFFFFFFF),
                     fields.get("mtime", 0xFFFFFFFF), fields.get("length", 0xFFFFFFFFFFFFFFFF),
                     fields.get("name", ""), fields.get("uid", ""), fields.get("gid", ""),
                     fields.get("muid", ""))
        self._call(self.client._wstat, fid, [d])

    def listdir(self, path=""):
        f = self.walk(path)
        try:
            self.open(f, OREAD)
            return self.parse_dir(self.readall(f))
        finally:
            self.clunk(f)

    @classmethod
    def parse_dir(cls, data):
        m = py9p.Marshal9P()
        m.setBuffer(data)
        m.buf.seek(0)
        out = []
        m.decstat(out, 0)
        return [cls._st(d) for d in out]

    def close(self):
        self.client.fd.close()


class OursPeer(Peer):
    """creepy.ninep.client.SyncClient."""

    kind = "ours"

    def __init__(self, dialstring, user, aname="", msize=None):
        kw = {} if msize is None else {"msize": msize}
        try:
            self.client = SyncClient(dialstring, uname=user, aname=aname, timeout=120, **kw)
        except Error9P as e:
            raise P9Error(e.ename) from None
        self.root = self.client.root
        self.msize = self.client.msize
        self.iounit = self.msize - 24

    def newfid(self):
        return self.client.alloc_fid()

    def _call(self, name, *args):
        try:
            return getattr(self.client, name)(*args)
        except Error9P as e:
            raise P9Error(e.ename) from None

    @staticmethod
    def _st(s):
        return St(s.type, s.dev, Q(*s.qid), s.mode, s.atime, s.mtime, s.length, s.name, s.uid,
                  s.gid, s.muid)

    def walk_qids(self, fid, newfid, names):
        return [Q(*q) for q in self._call("walk", fid, newfid, names)]

    def open(self, fid, mode):
        q, iounit = self._call("open", fid, mode)
        return Q(*q), iounit

    def create(self, fid, name, perm, mode):
        q, iounit = self._call("create", fid, name, perm, mode)
        return Q(*q), iounit

    def read(self, fid, off, count):
        return self._call("read", fid, off, count)

    def write(self, fid, off, data):
        return self._call("write", fid, off, data)

    def clunk(self, fid):
        self._call("clunk", fid)

    def remove(self, fid):
        self._call("remove", fid)

    def stat(self, fid):
        return self._st(self._call("stat", fid))

    def wstat(self, fid, **fields):
        st = nochange()
        for k, v in fields.items():
            assert k in WSTAT_FIELDS, k
            setattr(st, k, v)
        self._call("wstat", fid, st)

    def listdir(self, path=""):
        return [self._st(s) for s in self._call("listdir", path)]

    def close(self):
        self.client.close()


def connect(server, transport, kind, user, aname="", msize=None):
    """A peer of kind 'py9p' or 'ours' attached to server over transport 'tcp' or 'unix'."""
    if kind == "py9p":
        sock = server.connect_socket(transport)
        try:
            return Py9pPeer(sock, user, aname, **({} if msize is None else {"msize": msize}))
        except py9p.RpcError as e:
            sock.close()
            ename = e.args[0]
            raise P9Error(ename.decode() if isinstance(ename, bytes) else str(ename)) from None
        except BaseException:
            sock.close()
            raise
    return OursPeer(server.dialstring(transport), user, aname, msize)
