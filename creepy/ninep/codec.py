"""9P2000 codec: bytes in, typed messages out, and back.

This module turns 9P2000 frames into message objects and message objects into frames, and
splits a byte stream into frames.  It is shared by the server, the client and the fuzzers, so
it must never do I/O: no sockets, no asyncio, no files, no clocks, no logging.  Whoever owns
the connection feeds bytes in and writes the bytes it gets back.

Two kinds of failure, kept apart as in h11:

- The peer sent garbage: `decode` and `Framer` raise `ProtocolError`.  Its `.tag` is the
  frame's tag when it could be read (answer it with Rerror), else None; `.fatal` is True
  when the frame boundary itself is lost (a bad size field) and the connection must close.
  No other exception ever escapes `decode`.
- We misused the API (a field out of range, a string over 65535 bytes, 17 walk names):
  `encode` raises ValueError or TypeError, never ProtocolError.

Wire format (plan9 intro(5)).  Integers are little-endian; n[2] is a count of the
elements that follow; s is a string: len[2] then that many bytes of UTF-8, no NUL; a qid
is type[1] vers[4] path[8] = 13 bytes.  Every frame starts with size[4] type[1] tag[2]
and size counts the whole frame, size[4] included.

    type  message   body after size[4] type[1] tag[2]
    100   Tversion  msize[4] version[s]
    101   Rversion  msize[4] version[s]
    102   Tauth     afid[4] uname[s] aname[s]
    103   Rauth     aqid[13]
    104   Tattach   fid[4] afid[4] uname[s] aname[s]
    105   Rattach   qid[13]
    107   Rerror    ename[s]                 (106, Terror, does not exist)
    108   Tflush    oldtag[2]
    109   Rflush
    110   Twalk     fid[4] newfid[4] nwname[2] nwname*(wname[s])   nwname <= 16
    111   Rwalk     nwqid[2] nwqid*(qid[13])                       nwqid <= 16
    112   Topen     fid[4] mode[1]
    113   Ropen     qid[13] iounit[4]
    114   Tcreate   fid[4] name[s] perm[4] mode[1]
    115   Rcreate   qid[13] iounit[4]
    116   Tread     fid[4] offset[8] count[4]
    117   Rread     count[4] data[count]
    118   Twrite    fid[4] offset[8] count[4] data[count]
    119   Rwrite    count[4]
    120   Tclunk    fid[4]
    121   Rclunk
    122   Tremove   fid[4]
    123   Rremove
    124   Tstat     fid[4]
    125   Rstat     n[2] stat[n]
    126   Twstat    fid[4] n[2] stat[n]
    127   Rwstat

A stat entry (stat(5)), as it appears in Rstat, Twstat and directory reads:

    size[2] type[2] dev[4] qid[13] mode[4] atime[4] mtime[4] length[8]
    name[s] uid[s] gid[s] muid[s]

size counts the bytes after itself.  In Rstat and Twstat the entry is wrapped once more in
n[2], so n = size + 2.  `pack_stat` and `unpack_stat` work on the entry with its size[2].

Messages are slotted classes with a class attribute `type`; treat them as immutable.
Decoded Rread and Twrite data is bytes; for encoding, data may be bytes, bytearray or a
byte memoryview, copied once (`encode`) or not at all (`encode_parts`).

The hot path, without message objects: a server's commonest requests and replies (walk,
stat, clunk, open, create, read, write, remove and their 9P2000.L kin) also come as plain
functions on the class, which a message's own decoding and encoding go through too:

    Twalk.unpack(frame) -> (fid, newfid, names)     the fields after the tag; ProtocolError
                                                    (tag None) on garbage
    Rwalk.pack(tag, qids) -> frame                  ValueError/struct.error as encode's
                                                    ValueError, for fields out of range

Every 9P2000.L message has both (generated from its layout); of 9P2000's, the requests
Twalk, Topen, Tcreate, Tread, Twrite, Tclunk, Tremove, Tstat have `unpack` and the replies
Rwalk, Ropen, Rcreate, Rread, Rwrite, Rclunk, Rremove, Rstat, Rflush, Rwstat have `pack`.
"""

import struct
from typing import NamedTuple

__all__ = [
    'NOTAG', 'NOFID', 'IOHDRSZ', 'MAXWELEM', 'STAT_FIXED', 'HEADER', 'HEADER_SIZE',
    'QTDIR', 'QTAPPEND', 'QTEXCL', 'QTAUTH', 'QTTMP', 'QTSYMLINK', 'QTFILE',
    'DMDIR', 'DMAPPEND', 'DMEXCL', 'DMAUTH', 'DMTMP', 'DMSYMLINK',
    'OREAD', 'OWRITE', 'ORDWR', 'OEXEC', 'OTRUNC', 'ORCLOSE',
    'Qid', 'Stat', 'pack_stat', 'unpack_stat',
    'ProtocolError', 'Message', 'MESSAGES',
    'Tversion', 'Rversion', 'Tauth', 'Rauth', 'Tattach', 'Rattach', 'Rerror',
    'Tflush', 'Rflush', 'Twalk', 'Rwalk', 'Topen', 'Ropen', 'Tcreate', 'Rcreate',
    'Tread', 'Rread', 'Twrite', 'Rwrite', 'Tclunk', 'Rclunk', 'Tremove', 'Rremove',
    'Tstat', 'Rstat', 'Twstat', 'Rwstat',
    'encode', 'encode_parts', 'decode', 'Framer', 'FrameBuffer',
    'Dialect', 'NINEP2000', 'NINEP2000L', 'L_MESSAGES', 'NONUNAME',
    'pack_dirent', 'unpack_dirents', 'DIRENT_FIXED',
    'TauthL', 'TattachL', 'Rlerror', 'Tstatfs', 'Rstatfs', 'Tlopen', 'Rlopen', 'Tlcreate',
    'Rlcreate', 'Tsymlink', 'Rsymlink', 'Tmknod', 'Rmknod', 'Trename', 'Rrename', 'Treadlink',
    'Rreadlink', 'Tgetattr', 'Rgetattr', 'Tsetattr', 'Rsetattr', 'Txattrwalk', 'Rxattrwalk',
    'Txattrcreate', 'Rxattrcreate', 'Treaddir', 'Rreaddir', 'Tfsync', 'Rfsync', 'Tlock',
    'Rlock', 'Tgetlock', 'Rgetlock', 'Tlink', 'Rlink', 'Tmkdir', 'Rmkdir', 'Trenameat',
    'Rrenameat', 'Tunlinkat', 'Runlinkat',
]

NOTAG = 0xFFFF
NOFID = 0xFFFFFFFF
NONUNAME = 0xFFFFFFFF    # 9P2000.L attach: no numeric user given
IOHDRSZ = 24            # bytes of Twrite/Rread header a payload must leave room for
MAXWELEM = 16           # walk names per Twalk, qids per Rwalk

QTDIR = 0x80
QTAPPEND = 0x40
QTEXCL = 0x20
QTAUTH = 0x08
QTTMP = 0x04
QTSYMLINK = 0x02
QTFILE = 0x00

DMDIR = 0x80000000
DMAPPEND = 0x40000000
DMEXCL = 0x20000000
DMAUTH = 0x08000000
DMTMP = 0x04000000
DMSYMLINK = 0x02000000   # 9P2000.u's bit, which creepy's tree keeps for symbolic links

OREAD = 0
OWRITE = 1
ORDWR = 2
OEXEC = 3
OTRUNC = 0x10
ORCLOSE = 0x40

# size[4] type[1] tag[2]: the part every frame shares.
HEADER_SIZE = 7
HEADER = _HEAD = struct.Struct('<IBH')
_U16 = struct.Struct('<H')
_U32 = struct.Struct('<I')
_TWO_U32 = struct.Struct('<II')
_U32_U8 = struct.Struct('<IB')
_QID = struct.Struct('<BIQ')
assert _HEAD.size == HEADER_SIZE and _QID.size == 13

# Stat entry: size[2] type[2] dev[4] qid[13] mode[4] atime[4] mtime[4] length[8] name len[2];
# the three other strings follow name.
_STAT_HEAD = struct.Struct('<HHIBIQIIIQH')
STAT_FIXED = 2 + 2 + 4 + 13 + 4 + 4 + 4 + 8 + 4 * 2
assert _STAT_HEAD.size == STAT_FIXED - 3 * 2


class ProtocolError(Exception):
    """The peer sent bytes that are not 9P2000.

    tag: the frame's tag if it could be read, else None; a server answers Rerror to it.
    fatal: True when the frame boundary is lost (bad size field): close the connection.
    """

    def __init__(self, message, tag=None, fatal=False):
        super().__init__(message)
        self.tag = tag
        self.fatal = fatal


class Qid(NamedTuple):
    """A file's identity on the server: type (QT bits), version, path (unique per file)."""
    type: int
    vers: int
    path: int


_QID0 = Qid(0, 0, 0)
_make_qid = Qid._make


class Stat:
    """One stat(5) entry, fields in wire order.

    pack_stat takes any object with these attributes; this class is what unpack_stat returns.
    """

    __slots__ = ('type', 'dev', 'qid', 'mode', 'atime', 'mtime', 'length',
                 'name', 'uid', 'gid', 'muid')

    def __init__(self, type=0, dev=0, qid=_QID0, mode=0, atime=0, mtime=0, length=0,
                 name='', uid='', gid='', muid=''):
        self.type = type
        self.dev = dev
        self.qid = qid
        self.mode = mode
        self.atime = atime
        self.mtime = mtime
        self.length = length
        self.name = name
        self.uid = uid
        self.gid = gid
        self.muid = muid

    def __eq__(self, other):
        if other.__class__ is not Stat:
            return NotImplemented
        return all(getattr(self, f) == getattr(other, f) for f in Stat.__slots__)

    __hash__ = None

    def __repr__(self):
        return 'Stat(%s)' % ', '.join('%s=%r' % (f, getattr(self, f)) for f in Stat.__slots__)


def _utf8(text):
    return text.encode('utf-8')


def pack_stat(st):
    """The stat entry of st (any object with Stat's attributes), size[2] included.

    qid.vers is taken modulo 2**32: a version is a counter that may wrap.  Any other value
    out of range raises ValueError.  An object with a `packed` attribute keeps its encoding
    there: packed once, sent as often as it is asked for.
    """
    packed = getattr(st, 'packed', None)
    if packed is not None:
        return packed
    name = _utf8(st.name)
    key = (st.uid, st.gid, st.muid)
    q = st.qid
    try:
        ids = _IDS.get(key)
        if ids is None:
            ids = b''.join([_U16.pack(len(b)) + b for b in map(_utf8, key)])
            if len(_IDS) >= 1024:
                _IDS.clear()
            _IDS[key] = ids
        out = _STAT_HEAD.pack(STAT_FIXED - 8 + len(name) + len(ids), st.type, st.dev, q[0],
                              q[1] & 0xFFFFFFFF, q[2], st.mode, st.atime, st.mtime,
                              st.length, len(name)) + name + ids
    except struct.error as e:
        raise ValueError('stat field out of range: %s (%r)' % (e, st)) from None
    if hasattr(st, 'packed'):
        st.packed = out
    return out


# (uid, gid, muid) -> their strings as a stat entry ends with them: a tree has few owners.
_IDS = {}


def _unpack_str(buf, off):
    """(text, next offset) for the string at off; errors are turned into ProtocolError by callers."""
    end = off + 2 + (buf[off] | buf[off + 1] << 8)
    if end > len(buf):
        raise ProtocolError('string runs past the end')
    return str(buf[off + 2:end], 'utf-8'), end


def unpack_stat(buf, offset=0):
    """(Stat, offset after the entry) for the stat entry at offset; ProtocolError on garbage."""
    try:
        (size, type_, dev, qt, qv, qp, mode, atime, mtime, length,
         nlen) = _STAT_HEAD.unpack_from(buf, offset)
        end = offset + 2 + size
        if end > len(buf):
            raise ProtocolError('stat entry runs past the end')
        # Offsets only grow, so a string that overruns the entry makes the last one miss end.
        a = offset + _STAT_HEAD.size
        b = a + nlen
        name = str(buf[a:b], 'utf-8')
        a = b + 2
        b = a + (buf[b] | buf[b + 1] << 8)
        uid = str(buf[a:b], 'utf-8')
        a = b + 2
        b = a + (buf[b] | buf[b + 1] << 8)
        gid = str(buf[a:b], 'utf-8')
        a = b + 2
        b = a + (buf[b] | buf[b + 1] << 8)
        muid = str(buf[a:b], 'utf-8')
    except ProtocolError:
        raise
    except (struct.error, IndexError, UnicodeDecodeError, ValueError, TypeError) as e:
        raise ProtocolError('malformed stat: %s' % e) from None
    if b != end:
        raise ProtocolError('stat size %d disagrees with its fields (%d)' % (size, b - offset - 2))
    return Stat(type_, dev, Qid(qt, qv, qp), mode, atime, mtime, length, name, uid, gid, muid), end


class Message:
    """Base of all 9P messages: equality by fields, a readable repr."""

    __slots__ = ()
    type = None
    _fields = ()        # field names in wire order, tag first

    def __init_subclass__(cls):
        super().__init_subclass__()
        if cls.__dict__.get('__slots__'):
            cls._fields = cls.__slots__

    def __eq__(self, other):
        if other.__class__ is not self.__class__:
            return NotImplemented
        return all(getattr(self, f) == getattr(other, f) for f in self._fields)

    __hash__ = None

    def __repr__(self):
        fields = []
        for f in self._fields:
            v = getattr(self, f)
            if isinstance(v, (bytes, bytearray, memoryview)) and len(v) > 32:
                fields.append('%s=<%d bytes>' % (f, len(v)))
            else:
                fields.append('%s=%r' % (f, v))
        return '%s(%s)' % (self.__class__.__name__, ', '.join(fields))


def _fixed_size(buf, want, name):
    if len(buf) != want:
        raise ProtocolError('%s must be %d bytes, not %d' % (name, want, len(buf)))


# What a malformed frame raises inside an unpacker; unpack() turns it into ProtocolError.
_GARBAGE = (struct.error, IndexError, UnicodeDecodeError, ValueError, TypeError)


def _malformed(cls, e):
    return ProtocolError('malformed %s: %s' % (cls.__name__, e))


def _end_at(buf, off, name):
    if off != len(buf):
        raise ProtocolError('%s has %d trailing bytes' % (name, len(buf) - off))


# Each message class carries its layout: a Struct for the fixed part (header included),
# _encode (message -> frame) and _decode (whole frame, tag -> message).  Fixed parts are
# packed in one call; strings are appended.

_TVERSION = struct.Struct('<IBHIH')      # ... msize[4] version len[2]


class Tversion(Message):
    type = 100
    __slots__ = ('tag', 'msize', 'version')

    def __init__(self, tag, msize, version):
        self.tag = tag
        self.msize = msize
        self.version = version

    def _encode(self):
        v = _utf8(self.version)
        return _TVERSION.pack(13 + len(v), self.type, self.tag, self.msize, len(v)) + v

    @staticmethod
    def _decode(buf, tag):
        msize = _U32.unpack_from(buf, 7)[0]
        version, off = _unpack_str(buf, 11)
        _end_at(buf, off, 'Tversion')
        return Tversion(tag, msize, version)


class Rversion(Message):
    type = 101
    __slots__ = ('tag', 'msize', 'version')

    def __init__(self, tag, msize, version):
        self.tag = tag
        self.msize = msize
        self.version = version

    _encode = Tversion._encode

    @staticmethod
    def _decode(buf, tag):
        msize = _U32.unpack_from(buf, 7)[0]
        version, off = _unpack_str(buf, 11)
        _end_at(buf, off, 'Rversion')
        return Rversion(tag, msize, version)


_TAUTH = struct.Struct('<IBHIH')         # ... afid[4] uname len[2]


class Tauth(Message):
    type = 102
    __slots__ = ('tag', 'afid', 'uname', 'aname')

    def __init__(self, tag, afid, uname, aname):
        self.tag = tag
        self.afid = afid
        self.uname = uname
        self.aname = aname

    def _encode(self):
        u = _utf8(self.uname)
        a = _utf8(self.aname)
        return b''.join((_TAUTH.pack(15 + len(u) + len(a), self.type, self.tag, self.afid, len(u)),
                         u, _U16.pack(len(a)), a))

    @staticmethod
    def _decode(buf, tag):
        afid = _U32.unpack_from(buf, 7)[0]
        uname, off = _unpack_str(buf, 11)
        aname, off = _unpack_str(buf, off)
        _end_at(buf, off, 'Tauth')
        return Tauth(tag, afid, uname, aname)


_RQID = struct.Struct('<IBHBIQ')         # ... qid[13]


class Rauth(Message):
    type = 103
    __slots__ = ('tag', 'aqid')

    def __init__(self, tag, aqid):
        self.tag = tag
        self.aqid = aqid

    def _encode(self):
        q = self.aqid
        return _RQID.pack(20, self.type, self.tag, q[0], q[1] & 0xFFFFFFFF, q[2])

    @staticmethod
    def _decode(buf, tag):
        _fixed_size(buf, 20, 'Rauth')
        return Rauth(tag, _make_qid(_QID.unpack_from(buf, 7)))


_TATTACH = struct.Struct('<IBHIIH')      # ... fid[4] afid[4] uname len[2]


class Tattach(Message):
    type = 104
    __slots__ = ('tag', 'fid', 'afid', 'uname', 'aname')

    def __init__(self, tag, fid, afid, uname, aname):
        self.tag = tag
        self.fid = fid
        self.afid = afid
        self.uname = uname
        self.aname = aname

    def _encode(self):
        u = _utf8(self.uname)
        a = _utf8(self.aname)
        return b''.join((_TATTACH.pack(19 + len(u) + len(a), self.type, self.tag, self.fid,
                                       self.afid, len(u)),
                         u, _U16.pack(len(a)), a))

    @staticmethod
    def _decode(buf, tag):
        fid, afid = _TWO_U32.unpack_from(buf, 7)
        uname, off = _unpack_str(buf, 15)
        aname, off = _unpack_str(buf, off)
        _end_at(buf, off, 'Tattach')
        return Tattach(tag, fid, afid, uname, aname)


class Rattach(Message):
    type = 105
    __slots__ = ('tag', 'qid')

    def __init__(self, tag, qid):
        self.tag = tag
        self.qid = qid

    def _encode(self):
        q = self.qid
        return _RQID.pack(20, self.type, self.tag, q[0], q[1] & 0xFFFFFFFF, q[2])

    @staticmethod
    def _decode(buf, tag):
        _fixed_size(buf, 20, 'Rattach')
        return Rattach(tag, _make_qid(_QID.unpack_from(buf, 7)))


_RERROR = struct.Struct('<IBHH')         # ... ename len[2]


class Rerror(Message):
    type = 107
    __slots__ = ('tag', 'ename')

    def __init__(self, tag, ename):
        self.tag = tag
        self.ename = ename

    def _encode(self):
        e = _utf8(self.ename)
        return _RERROR.pack(9 + len(e), self.type, self.tag, len(e)) + e

    @staticmethod
    def _decode(buf, tag):
        ename, off = _unpack_str(buf, 7)
        _end_at(buf, off, 'Rerror')
        return Rerror(tag, ename)


_TFLUSH = struct.Struct('<IBHH')         # ... oldtag[2]


class Tflush(Message):
    type = 108
    __slots__ = ('tag', 'oldtag')

    def __init__(self, tag, oldtag):
        self.tag = tag
        self.oldtag = oldtag

    def _encode(self):
        return _TFLUSH.pack(9, self.type, self.tag, self.oldtag)

    @staticmethod
    def _decode(buf, tag):
        _fixed_size(buf, 9, 'Tflush')
        return Tflush(tag, _U16.unpack_from(buf, 7)[0])


class _Empty(Message):
    """R-messages that carry only their tag: size[4] type[1] tag[2]."""

    __slots__ = ('tag',)

    def __init__(self, tag):
        self.tag = tag

    def _encode(self):
        return _HEAD.pack(7, self.type, self.tag)

    @classmethod
    def pack(cls, tag):
        return _HEAD.pack(7, cls.type, tag)

    @classmethod
    def _decode(cls, buf, tag):
        _fixed_size(buf, 7, cls.__name__)
        return cls(tag)


class Rflush(_Empty):
    type = 109
    __slots__ = ()


_TWALK = struct.Struct('<IBHIIH')        # ... fid[4] newfid[4] nwname[2]
_TWALK_BODY = struct.Struct('<IIH')


class Twalk(Message):
    type = 110
    __slots__ = ('tag', 'fid', 'newfid', 'wnames')

    def __init__(self, tag, fid, newfid, wnames):
        if isinstance(wnames, str):
            raise TypeError('Twalk wnames must be a sequence of names, not a str')
        self.tag = tag
        self.fid = fid
        self.newfid = newfid
        self.wnames = tuple(wnames)

    def _encode(self):
        names = self.wnames
        if len(names) > MAXWELEM:
            raise ValueError('Twalk with %d names; at most %d' % (len(names), MAXWELEM))
        parts = [b'']
        size = 17
        for name in names:
            b = _utf8(name)
            parts.append(_U16.pack(len(b)))
            parts.append(b)
            size += 2 + len(b)
        parts[0] = _TWALK.pack(size, self.type, self.tag, self.fid, self.newfid, len(names))
        return b''.join(parts)

    @staticmethod
    def unpack(buf):
        """(fid, newfid, names): names a tuple of str."""
        try:
            fid, newfid, n = _TWALK_BODY.unpack_from(buf, 7)
            if n == 1 and len(buf) == 19 + (buf[17] | buf[18] << 8):    # the usual walk
                return fid, newfid, (str(buf[19:], 'utf-8'),)
            if n > MAXWELEM:
                raise ProtocolError('Twalk with %d names; at most %d' % (n, MAXWELEM))
            off = 17
            size = len(buf)
            names = []
            for _ in range(n):      # _unpack_str inlined: walks are the commonest request
                end = off + 2 + (buf[off] | buf[off + 1] << 8)
                if end > size:
                    raise ProtocolError('Twalk name runs past the end')
                names.append(str(buf[off + 2:end], 'utf-8'))
                off = end
            _end_at(buf, off, 'Twalk')
        except _GARBAGE as e:
            raise _malformed(Twalk, e) from None
        return fid, newfid, tuple(names)

    @staticmethod
    def _decode(buf, tag):
        m = Twalk.__new__(Twalk)
        m.tag = tag
        m.fid, m.newfid, m.wnames = Twalk.unpack(buf)
        return m


_RWALK = struct.Struct('<IBHH')          # ... nwqid[2]
_RWALK1 = struct.Struct('<IBHHBIQ')      # ... nwqid[2] with the one qid that usually follows


class Rwalk(Message):
    type = 111
    __slots__ = ('tag', 'wqids')

    def __init__(self, tag, wqids):
        self.tag = tag
        self.wqids = tuple(wqids)

    def _encode(self):
        return Rwalk.pack(self.tag, self.wqids)

    @staticmethod
    def pack(tag, qids):
        if len(qids) == 1:                  # the usual walk, in one pack
            q = qids[0]
            return _RWALK1.pack(22, 111, tag, 1, q[0], q[1] & 0xFFFFFFFF, q[2])
        if len(qids) > MAXWELEM:
            raise ValueError('Rwalk with %d qids; at most %d' % (len(qids), MAXWELEM))
        pack = _QID.pack
        return _RWALK.pack(9 + 13 * len(qids), 111, tag, len(qids)) + b''.join(
            [pack(q[0], q[1] & 0xFFFFFFFF, q[2]) for q in qids])

    @staticmethod
    def _decode(buf, tag):
        n = _U16.unpack_from(buf, 7)[0]
        if n > MAXWELEM:
            raise ProtocolError('Rwalk with %d qids; at most %d' % (n, MAXWELEM), tag)
        _fixed_size(buf, 9 + 13 * n, 'Rwalk')
        return Rwalk(tag, [_make_qid(q) for q in _QID.iter_unpack(buf[9:])])


_TOPEN = struct.Struct('<IBHIB')         # ... fid[4] mode[1]


class Topen(Message):
    type = 112
    __slots__ = ('tag', 'fid', 'mode')

    def __init__(self, tag, fid, mode):
        self.tag = tag
        self.fid = fid
        self.mode = mode

    def _encode(self):
        return _TOPEN.pack(12, self.type, self.tag, self.fid, self.mode)

    @staticmethod
    def unpack(buf):
        """(fid, mode)"""
        _fixed_size(buf, 12, 'Topen')
        return _U32_U8.unpack_from(buf, 7)

    @staticmethod
    def _decode(buf, tag):
        return Topen(tag, *Topen.unpack(buf))


_ROPEN = struct.Struct('<IBHBIQI')       # ... qid[13] iounit[4]


class Ropen(Message):
    type = 113
    __slots__ = ('tag', 'qid', 'iounit')

    def __init__(self, tag, qid, iounit):
        self.tag = tag
        self.qid = qid
        self.iounit = iounit

    def _encode(self):
        q = self.qid
        return _ROPEN.pack(24, self.type, self.tag, q[0], q[1] & 0xFFFFFFFF, q[2], self.iounit)

    @classmethod
    def pack(cls, tag, qid, iounit):
        return _ROPEN.pack(24, cls.type, tag, qid[0], qid[1] & 0xFFFFFFFF, qid[2], iounit)

    @classmethod
    def _decode(cls, buf, tag):
        _fixed_size(buf, 24, cls.__name__)
        _, _, _, qt, qv, qp, iounit = _ROPEN.unpack(buf)
        return cls(tag, Qid(qt, qv, qp), iounit)


_TCREATE = struct.Struct('<IBHIH')       # ... fid[4] name len[2]; then name perm[4] mode[1]


class Tcreate(Message):
    type = 114
    __slots__ = ('tag', 'fid', 'name', 'perm', 'mode')

    def __init__(self, tag, fid, name, perm, mode):
        self.tag = tag
        self.fid = fid
        self.name = name
        self.perm = perm
        self.mode = mode

    def _encode(self):
        n = _utf8(self.name)
        return b''.join((_TCREATE.pack(18 + len(n), self.type, self.tag, self.fid, len(n)), n,
                         _U32_U8.pack(self.perm, self.mode)))

    @staticmethod
    def unpack(buf):
        """(fid, name, perm, mode)"""
        try:
            fid = _U32.unpack_from(buf, 7)[0]
            name, off = _unpack_str(buf, 11)
            _fixed_size(buf, off + 5, 'Tcreate')
            perm, mode = _U32_U8.unpack_from(buf, off)
        except _GARBAGE as e:
            raise _malformed(Tcreate, e) from None
        return fid, name, perm, mode

    @staticmethod
    def _decode(buf, tag):
        return Tcreate(tag, *Tcreate.unpack(buf))


class Rcreate(Ropen):
    type = 115
    __slots__ = ()


_TREAD = struct.Struct('<IBHIQI')        # ... fid[4] offset[8] count[4]
_TREAD_BODY = struct.Struct('<IQI')


class Tread(Message):
    type = 116
    __slots__ = ('tag', 'fid', 'offset', 'count')

    def __init__(self, tag, fid, offset, count):
        self.tag = tag
        self.fid = fid
        self.offset = offset
        self.count = count

    def _encode(self):
        return _TREAD.pack(23, self.type, self.tag, self.fid, self.offset, self.count)

    @staticmethod
    def unpack(buf):
        """(fid, offset, count)"""
        _fixed_size(buf, 23, 'Tread')
        return _TREAD_BODY.unpack_from(buf, 7)

    @staticmethod
    def _decode(buf, tag):
        return Tread(tag, *Tread.unpack(buf))


_RREAD = struct.Struct('<IBHI')          # ... count[4]; then data


def _byte_view(data):
    # A memoryview of wider items would make len() count items, not bytes.
    if data.__class__ is memoryview and data.itemsize != 1:
        return data.cast('B')
    return data


class Rread(Message):
    type = 117
    __slots__ = ('tag', 'data')

    def __init__(self, tag, data):
        self.tag = tag
        self.data = data

    def _head(self, data):
        return _RREAD.pack(11 + len(data), 117, self.tag, len(data))

    @staticmethod
    def head(tag, count):
        """size[4] type[1] tag[2] count[4] of an Rread carrying count bytes, which follow."""
        return _RREAD.pack(11 + count, 117, tag, count)

    def _encode(self):
        return Rread.pack(self.tag, self.data)

    @staticmethod
    def pack(tag, data):
        data = _byte_view(data)
        return _RREAD.pack(11 + len(data), 117, tag, len(data)) + data

    @staticmethod
    def _decode(buf, tag):
        count = _U32.unpack_from(buf, 7)[0]
        _fixed_size(buf, 11 + count, 'Rread')
        return Rread(tag, buf[11:])


_TWRITE = struct.Struct('<IBHIQI')       # ... fid[4] offset[8] count[4]; then data


class Twrite(Message):
    type = 118
    __slots__ = ('tag', 'fid', 'offset', 'data')

    def __init__(self, tag, fid, offset, data):
        self.tag = tag
        self.fid = fid
        self.offset = offset
        self.data = data

    def _head(self, data):
        return _TWRITE.pack(23 + len(data), 118, self.tag, self.fid, self.offset, len(data))

    def _encode(self):
        data = _byte_view(self.data)
        return _TWRITE.pack(23 + len(data), 118, self.tag, self.fid, self.offset,
                            len(data)) + data

    @staticmethod
    def unpack(buf):
        """(fid, offset, data): a large payload is a read-only view into the frame, not a
        copy (a frame is never reused: a file system may keep the view as it is)."""
        try:
            fid, offset, count = _TREAD_BODY.unpack_from(buf, 7)
        except struct.error as e:
            raise _malformed(Twrite, e) from None
        _fixed_size(buf, 23 + count, 'Twrite')
        return fid, offset, memoryview(buf).toreadonly()[23:] if count >= 4096 else buf[23:]

    @staticmethod
    def _decode(buf, tag):
        return Twrite(tag, *Twrite.unpack(buf))


_RWRITE = struct.Struct('<IBHI')         # ... count[4]


class Rwrite(Message):
    type = 119
    __slots__ = ('tag', 'count')

    def __init__(self, tag, count):
        self.tag = tag
        self.count = count

    def _encode(self):
        return _RWRITE.pack(11, self.type, self.tag, self.count)

    @staticmethod
    def pack(tag, count):
        return _RWRITE.pack(11, 119, tag, count)

    @staticmethod
    def _decode(buf, tag):
        _fixed_size(buf, 11, 'Rwrite')
        return Rwrite(tag, _U32.unpack_from(buf, 7)[0])


_TFID = struct.Struct('<IBHI')           # ... fid[4]


class _FidOnly(Message):
    """T-messages that carry only a fid: size[4] type[1] tag[2] fid[4]."""

    __slots__ = ('tag', 'fid')

    def __init__(self, tag, fid):
        self.tag = tag
        self.fid = fid

    def _encode(self):
        return _TFID.pack(11, self.type, self.tag, self.fid)

    @classmethod
    def unpack(cls, buf):
        """(fid,)"""
        _fixed_size(buf, 11, cls.__name__)
        return _U32.unpack_from(buf, 7)

    @classmethod
    def _decode(cls, buf, tag):
        _fixed_size(buf, 11, cls.__name__)
        return cls(tag, _U32.unpack_from(buf, 7)[0])


class Tclunk(_FidOnly):
    type = 120
    __slots__ = ()


class Rclunk(_Empty):
    type = 121
    __slots__ = ()


class Tremove(_FidOnly):
    type = 122
    __slots__ = ()


class Rremove(_Empty):
    type = 123
    __slots__ = ()


class Tstat(_FidOnly):
    type = 124
    __slots__ = ()


def _unpack_wrapped_stat(buf, off, name):
    """The n[2] stat[n] that ends Rstat and Twstat: n must match the entry and the frame."""
    n = _U16.unpack_from(buf, off)[0]
    _fixed_size(buf, off + 2 + n, name)
    st, end = unpack_stat(buf, off + 2)
    if end != len(buf):
        raise ProtocolError('%s: stat entry shorter than n[2] says' % name)
    return st


class Rstat(Message):
    type = 125
    __slots__ = ('tag', 'stat')

    def __init__(self, tag, stat):
        self.tag = tag
        self.stat = stat

    def _encode(self):
        return Rstat.pack(self.tag, self.stat)

    @staticmethod
    def pack(tag, stat):
        st = pack_stat(stat)
        return _RERROR.pack(9 + len(st), 125, tag, len(st)) + st

    @staticmethod
    def _decode(buf, tag):
        return Rstat(tag, _unpack_wrapped_stat(buf, 7, 'Rstat'))


_TWSTAT = struct.Struct('<IBHIH')        # ... fid[4] n[2]; then stat[n]


class Twstat(Message):
    type = 126
    __slots__ = ('tag', 'fid', 'stat')

    def __init__(self, tag, fid, stat):
        self.tag = tag
        self.fid = fid
        self.stat = stat

    def _encode(self):
        st = pack_stat(self.stat)
        return _TWSTAT.pack(13 + len(st), self.type, self.tag, self.fid, len(st)) + st

    @staticmethod
    def _decode(buf, tag):
        fid = _U32.unpack_from(buf, 7)[0]
        return Twstat(tag, fid, _unpack_wrapped_stat(buf, 11, 'Twstat'))


class Rwstat(_Empty):
    type = 127
    __slots__ = ()


# -- 9P2000.L -------------------------------------------------------------------------------
#
# The Linux dialect (diod's protocol.md, the kernel's include/net/9p/9p.h).  Its messages are
# described by layouts, compiled once into struct calls: (field, kind) after the header, kind
# being 1, 2, 4 or 8 (an unsigned integer of that many bytes), 'Q' (a qid[13]), 's' (a
# string) or 'D' (count[4] data[count]).  Field names follow diod's, except where a name is
# taken by the class attribute `type`: the lock type is `ltype`, the statfs type `fstype`.

_FIXED = {1: 'B', 2: 'H', 4: 'I', 8: 'Q', 'Q': 'BIQ'}


class _Laid(Message):
    """A message whose wire form is its class's _layout (see above)."""

    __slots__ = ()
    _layout = ()
    _plan = ()

    def __init_subclass__(cls):
        super().__init_subclass__()
        if not cls.__dict__.get('__slots__'):
            return
        plan = []
        fixed = []
        for name, kind in cls._layout:
            if kind in _FIXED:
                fixed.append((name, kind))
                continue
            if fixed:
                plan.append(_fixed_step(fixed))
                fixed = []
            plan.append((kind, name))
        if fixed:
            plan.append(_fixed_step(fixed))
        cls._plan = tuple(plan)
        if len(plan) == 1 and plan[0][0] == 'fixed' and '__init__' not in cls.__dict__:
            _compile_fixed(cls, plan[0])

    def __init__(self, tag, *values, **named):
        fields = self._fields
        if len(values) > len(fields) - 1:
            raise TypeError('%s takes %d fields' % (self.__class__.__name__, len(fields) - 1))
        self.tag = tag
        for name, v in zip(fields[1:], values):
            setattr(self, name, v)
        for name in fields[1 + len(values):]:
            if name not in named:
                raise TypeError('%s: missing field %r' % (self.__class__.__name__, name))
            setattr(self, name, named.pop(name))
        if named:
            raise TypeError('%s: unknown fields %s' % (self.__class__.__name__, sorted(named)))

    def _encode(self):
        parts = [b'']
        size = HEADER_SIZE
        for step in self._plan:
            kind = step[0]
            if kind == 's':
                b = _utf8(getattr(self, step[1]))
                parts.append(_U16.pack(len(b)))
                parts.append(b)
                size += 2 + len(b)
            elif kind == 'D':
                data = _byte_view(getattr(self, step[1]))
                parts.append(_U32.pack(len(data)))
                parts.append(data)
                size += 4 + len(data)
            else:
                _, st, names, qids = step
                vals = []
                for name in names:
                    v = getattr(self, name)
                    if name in qids:
                        vals.extend((v[0], v[1] & 0xFFFFFFFF, v[2]))
                    else:
                        vals.append(v)
                parts.append(st.pack(*vals))
                size += st.size
        parts[0] = _HEAD.pack(size, self.type, self.tag)
        return b''.join(parts)

    @classmethod
    def _decode(cls, buf, tag):
        m = cls.__new__(cls)
        m.tag = tag
        off = HEADER_SIZE
        for step in cls._plan:
            kind = step[0]
            if kind == 's':
                v, off = _unpack_str(buf, off)
                setattr(m, step[1], v)
            elif kind == 'D':
                count = _U32.unpack_from(buf, off)[0]
                end = off + 4 + count
                if end > len(buf):
                    raise ProtocolError('%s data runs past the end' % cls.__name__)
                setattr(m, step[1], buf[off + 4:end])
                off = end
            else:
                _, st, names, qids = step
                vals = st.unpack_from(buf, off)
                off += st.size
                i = 0
                for name in names:
                    if name in qids:
                        setattr(m, name, Qid(vals[i], vals[i + 1], vals[i + 2]))
                        i += 3
                    else:
                        setattr(m, name, vals[i])
                        i += 1
        _end_at(buf, off, cls.__name__)
        return m

    @classmethod
    def unpack(cls, buf):
        """The fields after the tag, in layout order."""
        try:
            m = cls._decode(buf, 0)
        except _GARBAGE as e:
            raise _malformed(cls, e) from None
        return tuple([getattr(m, name) for name in cls._fields[1:]])

    @classmethod
    def pack(cls, tag, *values):
        return cls(tag, *values)._encode()


def _compile_fixed(cls, step):
    """For a message of fixed fields only (most replies, Tgetattr...), __init__, _encode,
    pack, unpack and _decode written out for its fields, one struct call each: these are on
    the hot path."""
    _, st, names, qids = step
    args = ''.join(', ' + n for n in names)
    body = ''.join('    self.%s = %s\n' % (n, n) for n in names)

    def values(prefix):
        vals = []
        for n in names:
            if n in qids:
                vals += ['%s%s[0]' % (prefix, n), '%s%s[1] & 0xFFFFFFFF' % (prefix, n),
                         '%s%s[2]' % (prefix, n)]
            else:
                vals.append(prefix + n)
        return ''.join(', ' + v for v in vals)

    head = '%d, %d' % (HEADER_SIZE + st.size, cls.type)
    src = ('def __init__(self, tag%s):\n    self.tag = tag\n%s    pass\n'
           'def _encode(self):\n    return _st.pack(%s, self.tag%s)\n'
           'def pack(tag%s):\n    return _st.pack(%s, tag%s)\n'
           % (args, body, head, values('self.'), args, head, values('')))
    # Decoding: one unpack of the whole frame, its size checked first.
    fields = []
    i = 3
    for n in names:
        if n in qids:
            fields.append('Qid(v[%d], v[%d], v[%d])' % (i, i + 1, i + 2))
            i += 3
        else:
            fields.append('v[%d]' % i)
            i += 1
    check = ('    if len(buf) != %d:\n'
             '        raise ProtocolError("%s must be %d bytes, not %%d" %% len(buf))\n'
             '    v = _st.unpack(buf)\n'
             % (HEADER_SIZE + st.size, cls.__name__, HEADER_SIZE + st.size))
    src += ('def unpack(buf):\n%s    return (%s)\n'
            % (check, ''.join(f + ', ' for f in fields)))
    src += ('def _decode(buf, tag):\n%s    m = _new(_cls)\n    m.tag = tag\n%s    return m\n'
            % (check, ''.join('    m.%s = %s\n' % (n, f) for n, f in zip(names, fields))))
    space = {'_st': struct.Struct('<IBH' + st.format[1:]), 'Qid': Qid, '_new': object.__new__,
             '_cls': cls, 'ProtocolError': ProtocolError}
    exec(src, space)
    cls.__init__ = space['__init__']
    cls._encode = space['_encode']
    cls.pack = staticmethod(space['pack'])
    cls.unpack = staticmethod(space['unpack'])
    cls._decode = staticmethod(space['_decode'])


def _fixed_step(fields):
    fmt = '<' + ''.join(_FIXED[kind] for _, kind in fields)
    return ('fixed', struct.Struct(fmt), tuple(n for n, _ in fields),
            frozenset(n for n, kind in fields if kind == 'Q'))


def _laid(name, mtype, layout, base=_Laid):
    """Define the message class `name` of type mtype with the given layout."""
    fields = ('tag',) + tuple(f for f, _ in layout)
    return type(name, (base,), {'type': mtype, '__slots__': fields, '_layout': tuple(layout),
                                '__module__': __name__, '__qualname__': name})


_QIDONLY = (('qid', 'Q'),)
_QIDIO = (('qid', 'Q'), ('iounit', 4))

Rlerror = _laid('Rlerror', 7, (('ecode', 4),))
Tstatfs = _laid('Tstatfs', 8, (('fid', 4),))
Rstatfs = _laid('Rstatfs', 9, (('fstype', 4), ('bsize', 4), ('blocks', 8), ('bfree', 8),
                                ('bavail', 8), ('files', 8), ('ffree', 8), ('fsid', 8),
                                ('namelen', 4)))
Tlopen = _laid('Tlopen', 12, (('fid', 4), ('flags', 4)))
Rlopen = _laid('Rlopen', 13, _QIDIO)
Tlcreate = _laid('Tlcreate', 14, (('fid', 4), ('name', 's'), ('flags', 4), ('mode', 4),
                                  ('gid', 4)))
Rlcreate = _laid('Rlcreate', 15, _QIDIO)
_U32X3 = struct.Struct('<III')


def _unpack_tlcreate(buf):
    """(fid, name, flags, mode, gid): Tlcreate's fields, unpacked on the hot path (a
    Linux create) without building the message."""
    try:
        fid = _U32.unpack_from(buf, 7)[0]
        name, off = _unpack_str(buf, 11)
        _fixed_size(buf, off + 12, 'Tlcreate')
        flags, mode, gid = _U32X3.unpack_from(buf, off)
    except _GARBAGE as e:
        raise _malformed(Tlcreate, e) from None
    return fid, name, flags, mode, gid


Tlcreate.unpack = staticmethod(_unpack_tlcreate)
Tsymlink = _laid('Tsymlink', 16, (('fid', 4), ('name', 's'), ('symtgt', 's'), ('gid', 4)))
Rsymlink = _laid('Rsymlink', 17, _QIDONLY)
Tmknod = _laid('Tmknod', 18, (('dfid', 4), ('name', 's'), ('mode', 4), ('major', 4),
                              ('minor', 4), ('gid', 4)))
Rmknod = _laid('Rmknod', 19, _QIDONLY)
Trename = _laid('Trename', 20, (('fid', 4), ('dfid', 4), ('name', 's')))
Rrename = _laid('Rrename', 21, ())
Treadlink = _laid('Treadlink', 22, (('fid', 4),))
Rreadlink = _laid('Rreadlink', 23, (('target', 's'),))
Tgetattr = _laid('Tgetattr', 24, (('fid', 4), ('request_mask', 8)))
Rgetattr = _laid('Rgetattr', 25, (
    ('valid', 8), ('qid', 'Q'), ('mode', 4), ('uid', 4), ('gid', 4), ('nlink', 8),
    ('rdev', 8), ('size', 8), ('blksize', 8), ('blocks', 8), ('atime_sec', 8),
    ('atime_nsec', 8), ('mtime_sec', 8), ('mtime_nsec', 8), ('ctime_sec', 8),
    ('ctime_nsec', 8), ('btime_sec', 8), ('btime_nsec', 8), ('gen', 8), ('data_version', 8)))
Tsetattr = _laid('Tsetattr', 26, (
    ('fid', 4), ('valid', 4), ('mode', 4), ('uid', 4), ('gid', 4), ('size', 8),
    ('atime_sec', 8), ('atime_nsec', 8), ('mtime_sec', 8), ('mtime_nsec', 8)))
Rsetattr = _laid('Rsetattr', 27, ())
Txattrwalk = _laid('Txattrwalk', 30, (('fid', 4), ('newfid', 4), ('name', 's')))
Rxattrwalk = _laid('Rxattrwalk', 31, (('size', 8),))
Txattrcreate = _laid('Txattrcreate', 32, (('fid', 4), ('name', 's'), ('attr_size', 8),
                                          ('flags', 4)))
Rxattrcreate = _laid('Rxattrcreate', 33, ())
Treaddir = _laid('Treaddir', 40, (('fid', 4), ('offset', 8), ('count', 4)))
Rreaddir = _laid('Rreaddir', 41, (('data', 'D'),))
Rfsync = _laid('Rfsync', 51, ())
Tlock = _laid('Tlock', 52, (('fid', 4), ('ltype', 1), ('flags', 4), ('start', 8),
                            ('length', 8), ('proc_id', 4), ('client_id', 's')))
Rlock = _laid('Rlock', 53, (('status', 1),))
Tgetlock = _laid('Tgetlock', 54, (('fid', 4), ('ltype', 1), ('start', 8), ('length', 8),
                                  ('proc_id', 4), ('client_id', 's')))
Rgetlock = _laid('Rgetlock', 55, (('ltype', 1), ('start', 8), ('length', 8), ('proc_id', 4),
                                  ('client_id', 's')))
Tlink = _laid('Tlink', 70, (('dfid', 4), ('fid', 4), ('name', 's')))
Rlink = _laid('Rlink', 71, ())
Tmkdir = _laid('Tmkdir', 72, (('dfid', 4), ('name', 's'), ('mode', 4), ('gid', 4)))
Rmkdir = _laid('Rmkdir', 73, _QIDONLY)
Trenameat = _laid('Trenameat', 74, (('olddirfid', 4), ('oldname', 's'), ('newdirfid', 4),
                                    ('newname', 's')))
Rrenameat = _laid('Rrenameat', 75, ())
Tunlinkat = _laid('Tunlinkat', 76, (('dirfid', 4), ('name', 's'), ('flags', 4)))
Runlinkat = _laid('Runlinkat', 77, ())


class Tfsync(_Laid):
    """fid[4] datasync[4]; clients older than Linux 4.x send no datasync (read as 0)."""

    type = 50
    __slots__ = ('tag', 'fid', 'datasync')
    _layout = (('fid', 4), ('datasync', 4))

    def __init__(self, tag, fid, datasync=0):
        super().__init__(tag, fid, datasync)

    @classmethod
    def _decode(cls, buf, tag):
        if len(buf) == 11:
            return cls(tag, _U32.unpack_from(buf, 7)[0], 0)
        return super()._decode.__func__(cls, buf, tag)


class TauthL(_Laid):
    """Tauth as 9P2000.L (and .u) sends it: Tauth's fields, then n_uname[4], the numeric
    user (NONUNAME: none given, the name counts)."""

    type = 102
    __slots__ = ('tag', 'afid', 'uname', 'aname', 'n_uname')
    _layout = (('afid', 4), ('uname', 's'), ('aname', 's'), ('n_uname', 4))


class TattachL(_Laid):
    """Tattach as 9P2000.L (and .u) sends it: Tattach's fields, then n_uname[4]."""

    type = 104
    __slots__ = ('tag', 'fid', 'afid', 'uname', 'aname', 'n_uname')
    _layout = (('fid', 4), ('afid', 4), ('uname', 's'), ('aname', 's'), ('n_uname', 4))


_DIRENT = struct.Struct('<BIQQBH')       # qid[13] offset[8] type[1] name len[2]
DIRENT_FIXED = _DIRENT.size


def pack_dirent(qid, offset, dtype, name):
    """One Rreaddir entry: qid[13] offset[8] type[1] name[s]; offset is where the next
    entry starts (a cookie for Treaddir), dtype a dirent d_type (DT_DIR, DT_REG, DT_LNK)."""
    b = _utf8(name)
    return _DIRENT.pack(qid[0], qid[1] & 0xFFFFFFFF, qid[2], offset, dtype, len(b)) + b


def unpack_dirents(data):
    """[(Qid, offset, dtype, name)] of the entries in an Rreaddir's data; ProtocolError on
    garbage."""
    out = []
    off = 0
    n = len(data)
    try:
        while off < n:
            qt, qv, qp, offset, dtype, nlen = _DIRENT.unpack_from(data, off)
            a = off + DIRENT_FIXED
            if a + nlen > n:
                raise ProtocolError('directory entry name runs past the end')
            out.append((Qid(qt, qv, qp), offset, dtype, str(data[a:a + nlen], 'utf-8')))
            off = a + nlen
    except (struct.error, UnicodeDecodeError) as e:
        raise ProtocolError('malformed directory entry: %s' % e) from None
    return out


MESSAGES = (Tversion, Rversion, Tauth, Rauth, Tattach, Rattach, Rerror, Tflush, Rflush,
            Twalk, Rwalk, Topen, Ropen, Tcreate, Rcreate, Tread, Rread, Twrite, Rwrite,
            Tclunk, Rclunk, Tremove, Rremove, Tstat, Rstat, Twstat, Rwstat)

#: the messages of 9P2000.L: its own, and those it shares with 9P2000 (Topen, Tcreate,
#: Tstat, Twstat and Rerror are not part of it; Tauth and Tattach carry n_uname)
L_MESSAGES = (Tversion, Rversion, TauthL, Rauth, TattachL, Rattach, Rlerror, Tflush, Rflush,
              Twalk, Rwalk, Tread, Rread, Twrite, Rwrite, Tclunk, Rclunk, Tremove, Rremove,
              Tstatfs, Rstatfs, Tlopen, Rlopen, Tlcreate, Rlcreate, Tsymlink, Rsymlink,
              Tmknod, Rmknod, Trename, Rrename, Treadlink, Rreadlink, Tgetattr, Rgetattr,
              Tsetattr, Rsetattr, Txattrwalk, Rxattrwalk, Txattrcreate, Rxattrcreate,
              Treaddir, Rreaddir, Tfsync, Rfsync, Tlock, Rlock, Tgetlock, Rgetlock, Tlink,
              Rlink, Tmkdir, Rmkdir, Trenameat, Rrenameat, Tunlinkat, Runlinkat)


def _decoder(messages):
    decoders = {cls.type: cls._decode for cls in messages}
    names = {cls.type: cls.__name__ for cls in messages}
    assert len(decoders) == len(messages)

    def decode(frame):
        """The message in frame (a whole frame, size[4] included); ProtocolError on garbage."""
        if frame.__class__ is not bytes:
            frame = bytes(frame)
        n = len(frame)
        if n < HEADER_SIZE:
            raise ProtocolError('frame of %d bytes is shorter than a header' % n, None, True)
        size, mtype, tag = _HEAD.unpack_from(frame)
        if size != n:
            raise ProtocolError('size field %d disagrees with frame length %d' % (size, n),
                                tag, True)
        decoder = decoders.get(mtype)
        if decoder is None:
            raise ProtocolError('unknown message type %d' % mtype, tag)
        try:
            return decoder(frame, tag)
        except ProtocolError as e:
            e.tag = tag
            raise
        except (struct.error, IndexError, UnicodeDecodeError, ValueError, TypeError) as e:
            raise ProtocolError('malformed %s: %s' % (names[mtype], e), tag) from None
    return decode


class Dialect:
    """A dialect of 9P: the version string Tversion names, and its table of messages.

    `decode(frame)` reads a frame by this dialect's table; encoding needs no table (a message
    knows its layout).  A dialect is a table, not a fork: both share every message they have
    in common."""

    __slots__ = ('version', 'messages', 'decode')

    def __init__(self, version, messages):
        self.version = version
        self.messages = tuple(messages)
        self.decode = _decoder(messages)

    def __repr__(self):
        return 'Dialect(%r)' % self.version


NINEP2000 = Dialect('9P2000', MESSAGES)
NINEP2000L = Dialect('9P2000.L', L_MESSAGES)

#: the message in a frame, by 9P2000's table (see Dialect for another dialect's)
decode = NINEP2000.decode


def encode(msg):
    """The whole frame for msg, size[4] included.  ValueError if a field is out of range."""
    try:
        return msg._encode()
    except struct.error as e:
        raise ValueError('cannot encode %r: %s' % (msg, e)) from None
    except AttributeError:
        if not isinstance(msg, Message):
            raise TypeError('not a 9P message: %r' % (msg,)) from None
        raise


def encode_parts(msg):
    """The frame for msg as a list of buffers to write in order.

    Rread and Twrite come back as [header, data] with data not copied, for writelines or
    for two writes when the payload is large; every other message is [encode(msg)].
    """
    if msg.__class__ is Rread or msg.__class__ is Twrite:
        data = _byte_view(msg.data)
        try:
            return [msg._head(data), data]
        except struct.error as e:
            raise ValueError('cannot encode %r: %s' % (msg, e)) from None
    return [encode(msg)]


class FrameBuffer(bytearray):
    """A large frame received into a buffer of its own (Framer).  It can be weakly
    referenced, so that a file system keeping views of its payload can tell how long the
    frame stays in memory (store.Store.write)."""
    __slots__ = ('__weakref__',)

    @classmethod
    def unfilled(cls, size):
        """A FrameBuffer of size bytes whose content is not set: the receiver fills all of
        it before anyone reads it.  bytearray(size) zeroes its memory first, which costs
        about a fifth of receiving it (a 1 MiB Twrite); CPython's PyByteArray_Resize sizes a
        buffer without touching it.  Elsewhere, a zeroed one."""
        b = cls()
        if _resize is None or _resize(b, size) != 0 or len(b) != size:
            return cls(size)
        return b


def _bytearray_resize():
    try:
        import ctypes
        fn = ctypes.pythonapi.PyByteArray_Resize
    except (ImportError, AttributeError):
        return None
    fn.argtypes = (ctypes.py_object, ctypes.c_ssize_t)
    fn.restype = ctypes.c_int
    return fn


_resize = _bytearray_resize()


class Ahead:
    """Bytes that framers sharing this may allocate ahead of what arrived: the buffer of a
    large frame, whole, as soon as its size field is here (Framer).  A server shares one
    among its connections, so that peers who announce large frames and then send them
    slowly, or never, hold at most `limit` bytes more than they sent, whatever their number;
    past it a framer waits for a quarter of the frame as it does without one.

    limit: bytes; used: bytes taken now (each framer gives back what it took when its frame
    is whole, or when it is closed)."""

    def __init__(self, limit):
        self.limit = limit
        self.used = 0


class Framer:
    """Splits a byte stream into 9P frames.

    Bytes come in by feed(data), or without a copy by writing into get_buffer() and calling
    buffer_updated(n) (the shape of asyncio.BufferedProtocol).  frames() yields each complete
    frame and keeps a partial one for later.  A size field below 7 or above msize raises
    ProtocolError(fatal=True): the stream cannot be resynchronised.

    Small frames share one buffer, a bytearray with a start and an end offset, and each is
    yielded as a bytes copy.  The buffer is never resized in place (a memoryview handed out
    by get_buffer may still be alive); when it runs out of room the unread bytes move to the
    front, or to a larger buffer, so each byte is copied a bounded number of times whatever
    the frame sizes and read sizes are.

    A frame of BIG_FRAME bytes or more, once a quarter of it has arrived, is received into a
    bytearray of its own (get_buffer hands out exactly its missing part, so one receive never
    runs past it), and that bytearray is yielded as the frame: the rest of its payload is never
    copied here.  The frame is the caller's from then on.  With an Ahead that has room, the
    frame gets its buffer as soon as its size field is here, and none of it is copied: a
    quarter of a 1 MiB Twrite copied and received in three smaller reads cost a fifth of a
    loopback client's write rate.  close() gives back what the framer took of the Ahead.
    """

    # Receive at least this much per read when possible: many small frames per syscall.
    READ_SIZE = 1 << 16
    # Frames at least this large get a buffer of their own.
    BIG_FRAME = 1 << 16

    def __init__(self, msize, ahead=None):
        self.msize = msize
        self.ahead = ahead
        self._taken = 0             # bytes of ahead held by the large frame being received
        # Never more than two frames' worth: before Tversion msize is small, and so is this.
        self._buf = bytearray(2 * min(self.READ_SIZE, msize))
        self._view = memoryview(self._buf)
        self._start = 0
        self._end = 0
        self._big = None            # the large frame being received, and its bytes so far
        self._bigfill = 0
        self._done = []             # large frames received and not yet yielded, in order

    def pending(self):
        """Bytes received and not yet returned as frames."""
        return (self._end - self._start + (self._bigfill if self._big is not None else 0)
                + sum(len(f) for f in self._done))

    def _make_room(self, want):
        live = self._end - self._start
        if live + want <= len(self._buf):
            # Enough room once the unread bytes move to the front (a memmove).  A frame in
            # progress moves at most once: get_buffer then asks for room for all of it.
            self._view[:live] = self._view[self._start:self._end]
        else:
            buf = bytearray(max(2 * (live + want), len(self._buf)))
            view = memoryview(buf)
            view[:live] = self._view[self._start:self._end]
            self._buf = buf
            self._view = view
        self._start = 0
        self._end = live

    def get_buffer(self, sizehint=-1):
        """A writable memoryview to receive into; then call buffer_updated(nbytes)."""
        if self._big is not None:
            return memoryview(self._big)[self._bigfill:]
        if self._start == self._end:
            self._start = self._end = 0
        want = self.READ_SIZE if self.msize >= self.READ_SIZE else self.msize
        live = self._end - self._start
        if live >= 4:
            # A frame in progress gets room for its rest, but at most as much again as has
            # arrived of it: a peer that announces a large frame and sends it slowly, or never,
            # costs about what it has sent, not the frame (the buffer still grows fourfold a
            # step, so each byte moves a bounded number of times).  Once a quarter of a frame
            # of BIG_FRAME bytes or more is here, it moves to a buffer of its own, which
            # receives the rest in place (the frame is then the last bytes held: frames()
            # took every complete one).
            size = _U32.unpack_from(self._buf, self._start)[0]
            if live < size <= self.msize:
                if size >= self.BIG_FRAME and (4 * live >= size or self._take(size - live)):
                    big = FrameBuffer.unfilled(size)
                    big[:live] = self._view[self._start:self._end]
                    self._start = self._end = 0
                    self._big = big
                    self._bigfill = live
                    return memoryview(big)[live:]
                if want < size - live:
                    want = size - live if size - live < live else max(want, live)
        if len(self._buf) - self._end < want:
            self._make_room(want)
        return self._view[self._end:]

    def _take(self, n):
        """Take n bytes of the Ahead for the large frame about to be allocated, if it has
        them."""
        ahead = self.ahead
        if ahead is None or ahead.used + n > ahead.limit:
            return False
        ahead.used += n
        self._taken = n
        return True

    def _give_back(self):
        if self._taken:
            self.ahead.used -= self._taken
            self._taken = 0

    def close(self):
        """The stream has ended: drop what is held and give back what was taken of the
        Ahead."""
        self._give_back()
        self._big = None
        self._done.clear()

    def buffer_updated(self, nbytes):
        if self._big is None:
            self._end += nbytes
            return
        self._bigfill += nbytes
        if self._bigfill == len(self._big):
            self._done.append(self._big)
            self._big = None
            self._give_back()

    def feed(self, data):
        """Append received bytes (any bytes-like object)."""
        view = memoryview(data).cast('B')
        while view:
            if self._big is None and len(self._buf) - self._end < len(view):
                self._make_room(len(view))
            buf = self.get_buffer()
            n = min(len(buf), len(view))
            buf[:n] = view[:n]
            self.buffer_updated(n)
            view = view[n:]

    def frames(self):
        """Yield every complete frame received so far: bytes, or a bytearray of its own for
        a frame of BIG_FRAME bytes or more."""
        done = self._done
        while done:
            yield done.pop(0)
        buf = self._buf
        unpack = _U32.unpack_from
        msize = self.msize
        while True:
            start = self._start
            avail = self._end - start
            if avail < 4:
                break
            size = unpack(buf, start)[0]
            if size < HEADER_SIZE or size > msize:
                raise ProtocolError('frame size %d outside [%d, %d]' % (size, HEADER_SIZE, msize),
                                    None, True)
            if avail < size:
                break
            self._start = start + size
            yield bytes(buf[start:start + size])
            buf = self._buf
            msize = self.msize          # a Tversion just handled may have changed it
        if self._start == self._end:
            self._start = self._end = 0
