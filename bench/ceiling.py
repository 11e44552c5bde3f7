"""The ceilings bench.py measures creepy against, each run as a process of its own.

    python bench/ceiling.py 9p [asyncio|uvloop]   a bare asyncio 9P responder: no file
                                                  system, a fixed minimal reply of the right
                                                  type to every request, on that event loop
                                                  (default asyncio's)
    python bench/ceiling.py stream                a plain TCP byte stream: sink or source

Both listen on 127.0.0.1, port 0, and print the port on the first line of stdout.

The 9P responder is the fastest request/response server asyncio offers (DESIGN.md, "Performance
facts": a BufferedProtocol receiving into one buffer, replies to one buffer of requests written
at once), with the same framing creepy's server does and nothing else: Twalk gets one qid per
name, Tstat a fixed entry, Tread `count` zero bytes (header and payload written separately, as
creepy writes large reads), Twrite its count.  It is what any Python 9P server pays before it
does any work of its own.  One piece of state, so that directory reads compare: a fid walked
to a name "dir" (DIRNAME) is a directory of DIRENTRIES entries, all alike, which Tread
(9P2000: stat entries) and Treaddir (9P2000.L: dirents) hand out in whole entries from the
offset on, until they run out.

The stream server takes a 17-byte request per connection: op ('W' sink, 'R' source), total
bytes[8], chunk bytes[8].  A sink receives total bytes and answers one byte; a source sends
total bytes in sendall() calls of chunk bytes.
"""

import asyncio
import socket
import struct
import sys

HEAD = struct.Struct("<IBH")
QID = struct.Struct("<BIQ")
MSIZE = (1 << 20) + 24
ZEROS = memoryview(bytes(MSIZE))


def _stat_entry():
    name, uid = b"bench", b"bench"
    fixed = struct.pack("<HIBIQIIIQ", 0, 0, 0, 0, 7, 0o644, 0, 0, 4096)
    body = fixed + b"".join(struct.pack("<H", len(s)) + s for s in (name, uid, uid, uid))
    return struct.pack("<H", len(body)) + body


_STAT = _stat_entry()
_QID = QID.pack(0, 0, 7)
_DIRQID = QID.pack(0x80, 0, 1)
DIRNAME = b"dir"
DIRENTRIES = 1000
_DIRNAME_WIRE = struct.pack("<H", len(DIRNAME)) + DIRNAME     # the last name of a Twalk
# One Rreaddir entry: qid[13] offset[8] type[1] name[s]; offset is patched per entry.
_DIRENT = struct.Struct("<BIQQBH")
_DIRENT_NAME = b"bench"
_DIRENT_SIZE = _DIRENT.size + len(_DIRENT_NAME)


def _dir_read(offset, count):
    """The whole stat entries of the bare directory from byte offset (9P2000 Tread)."""
    first = offset // len(_STAT)
    n = max(0, min(count // len(_STAT), DIRENTRIES - first))
    return _STAT * n


def _dir_readdir(offset, count):
    """The dirents of the bare directory from entry offset (9P2000.L Treaddir)."""
    n = max(0, min(count // _DIRENT_SIZE, DIRENTRIES - offset))
    return b"".join(_DIRENT.pack(0, 0, 7 + i, i + 1, 8, len(_DIRENT_NAME)) + _DIRENT_NAME
                    for i in range(offset, offset + n))


def _reply(rtype, body=b""):
    """A reply frame with tag 0, to have its tag patched."""
    return bytearray(HEAD.pack(7 + len(body), rtype, 0) + body)


# Replies by request type; Twalk's by number of names.
FIXED = {
    102: _reply(107, struct.pack("<H", 27) + b"authentication not required"),
    104: _reply(105, _DIRQID),                                  # Rattach
    108: _reply(109),                                           # Rflush
    112: _reply(113, _QID + struct.pack("<I", MSIZE - 24)),     # Ropen
    114: _reply(115, _QID + struct.pack("<I", MSIZE - 24)),     # Rcreate
    120: _reply(121),                                           # Rclunk
    122: _reply(123),                                           # Rremove
    124: _reply(125, struct.pack("<H", len(_STAT)) + _STAT),    # Rstat
    126: _reply(127),                                           # Rwstat
}
# 9P2000.L: Rgetattr, Rlopen, Rlcreate, Rfsync, Runlinkat, Rmkdir.
FIXED.update({
    24: _reply(25, struct.pack("<Q", 0x7FF) + _QID + struct.pack("<III", 0o100644, 0, 0)
               + struct.pack("<15Q", 1, 0, 30, 4096, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)),
    12: _reply(13, _QID + struct.pack("<I", MSIZE - 24)),
    14: _reply(15, _QID + struct.pack("<I", MSIZE - 24)),
    50: _reply(51),
    76: _reply(77),
    72: _reply(73, _QID),
})
WALKS = [_reply(111, struct.pack("<H", n) + _QID * n) for n in range(17)]
ERROR = _reply(107, struct.pack("<H", 20) + b"unexpected message!!")


class Responder(asyncio.BufferedProtocol):
    def __init__(self):
        self.buf = bytearray(2 * MSIZE)
        self.view = memoryview(self.buf)
        self.start = 0
        self.end = 0
        self.msize = MSIZE
        self.dirfids = set()

    def connection_made(self, transport):
        self.transport = transport

    def get_buffer(self, sizehint):
        if self.start == self.end:
            self.start = self.end = 0
        elif len(self.buf) - self.end < 65536:
            live = self.end - self.start
            self.view[:live] = self.view[self.start:self.end]
            self.start, self.end = 0, live
        return self.view[self.end:]

    def buffer_updated(self, nbytes):
        self.end += nbytes
        buf = self.buf
        out = []
        write = self.transport.write
        while self.end - self.start >= 7:
            start = self.start
            size, mtype, tag = HEAD.unpack_from(buf, start)
            if size < 7 or size > self.msize:
                self.transport.close()
                return
            if self.end - start < size:
                break
            self.start = start + size
            if mtype == 110:                                    # Twalk
                n = buf[start + 15] | buf[start + 16] << 8
                r = WALKS[min(n, 16)]
                if n and buf[start + size - len(_DIRNAME_WIRE):start + size] == _DIRNAME_WIRE:
                    self.dirfids.add(struct.unpack_from("<I", buf, start + 11)[0])
            elif mtype == 116 or mtype == 40:                   # Tread: zeros; Treaddir
                fid, offset, count = struct.unpack_from("<IQI", buf, start + 7)
                count = min(count, self.msize - 24)
                if self.dirfids and fid in self.dirfids:
                    data = (_dir_read if mtype == 116 else _dir_readdir)(offset, count)
                    out.append(HEAD.pack(11 + len(data), mtype + 1, tag)
                               + struct.pack("<I", len(data)) + data)
                    continue
                if mtype == 40:                                 # Treaddir of a file
                    r = ERROR
                    r[5] = tag & 0xFF
                    r[6] = tag >> 8
                    out.append(bytes(r))
                    continue
                out.append(HEAD.pack(11 + count, 117, tag) + struct.pack("<I", count))
                if count >= 65536:
                    write(b"".join(out))
                    out.clear()
                    write(ZEROS[:count])
                else:
                    out.append(ZEROS[:count].tobytes())
                continue
            elif mtype == 118:                                  # Twrite: its count
                count = struct.unpack_from("<I", buf, start + 19)[0]
                out.append(HEAD.pack(11, 119, tag) + struct.pack("<I", count))
                continue
            elif mtype == 100:                                  # Tversion: 9P2000 or .L
                msize = min(struct.unpack_from("<I", buf, start + 7)[0], MSIZE)
                self.msize = msize
                v = b"9P2000.L" if bytes(buf[start + 13:start + size]) == b"9P2000.L" else b"9P2000"
                out.append(HEAD.pack(13 + len(v), 101, tag) + struct.pack("<IH", msize, len(v)) + v)
                continue
            else:
                if mtype == 120 and self.dirfids:               # Tclunk of a directory
                    self.dirfids.discard(struct.unpack_from("<I", buf, start + 7)[0])
                r = FIXED.get(mtype, ERROR)
            r[5] = tag & 0xFF
            r[6] = tag >> 8
            out.append(bytes(r))
        if out:
            write(out[0] if len(out) == 1 else b"".join(out))
        if self.start == self.end:
            self.start = self.end = 0


async def serve_9p():
    loop = asyncio.get_running_loop()
    srv = await loop.create_server(Responder, "127.0.0.1", 0)
    print(srv.sockets[0].getsockname()[1], flush=True)
    await srv.serve_forever()


def serve_stream():
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(8)
    print(ls.getsockname()[1], flush=True)
    buf = bytearray(MSIZE)
    view = memoryview(buf)
    while True:
        s, _ = ls.accept()
        with s:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            req = b""
            while len(req) < 17:
                more = s.recv(17 - len(req))
                if not more:
                    break
                req += more
            if len(req) < 17:
                continue
            op, total, chunk = struct.unpack("<cQQ", req)
            if op == b"W":
                left = total
                while left:
                    n = s.recv_into(view, min(left, len(buf)))
                    if not n:
                        break
                    left -= n
                s.sendall(b"k")
            else:
                sent = 0
                while sent < total:
                    n = min(chunk, total - sent)
                    s.sendall(view[:n])
                    sent += n
                s.recv(1)


if __name__ == "__main__":
    if sys.argv[1:2] == ["9p"] and sys.argv[2:] in ([], ["asyncio"], ["uvloop"]):
        factory = None
        if sys.argv[2:] == ["uvloop"]:
            import uvloop
            factory = uvloop.new_event_loop
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(serve_9p())
    elif sys.argv[1:] == ["stream"]:
        serve_stream()
    else:
        raise SystemExit("usage: ceiling.py 9p [asyncio|uvloop] | stream")
