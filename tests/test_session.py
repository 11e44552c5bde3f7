"""The 9P session alone, with no socket and no event loop: frames in, replies and work out.

This is how the server's asyncio adapter drives it (creepy/ninep/server.py); a test or a
fuzzer can do the same.  Run one: `pytest tests/test_session.py -k flush`.
"""

from creepy import errors as E
from creepy.ninep.codec import (
    NOFID, NOTAG, Framer, Rattach, Rerror, Rflush, Rstat, Rversion, Rwalk, Tattach, Tflush,
    Topen, Tread, Tstat, Tversion, Twalk, decode, encode,
)
from creepy.ninep.session import Peer, Session

from test_server import FakeFs


def session(msize=8192):
    fs = FakeFs()
    s = Session(fs, Peer('test!1', None, 'tcp'), msize=msize)
    return fs, s


def feed(s, *msgs):
    """Receive msgs; return the replies produced (and clear out)."""
    for m in msgs:
        s.framer.feed(encode(m))
    for frame in s.framer.frames():
        s.receive(frame)
    framer = Framer(1 << 30)
    for part in s.out:
        framer.feed(part)
    s.out.clear()
    s.out_bytes = 0
    s.out_big = False
    return [decode(f) for f in framer.frames()]


def test_a_session_answers_frames_without_any_io():
    fs, s = session()
    fs.mkfile('/a/f', b'data')
    got = feed(s, Tversion(NOTAG, 8192, '9P2000'), Tattach(1, 0, NOFID, 'glenda', ''),
               Twalk(2, 0, 1, ['a', 'f']), Tstat(3, 1))
    assert [type(r) for r in got] == [Rversion, Rattach, Rwalk, Rstat]
    assert got[3].stat.name == 'f' and s.peer.uname == 'glenda'


def test_a_reply_larger_than_msize_becomes_an_error():
    # At msize 256 the Rstat of a file with a 200-byte name would be a 269-byte frame.
    fs, s = session()
    fs.mkfile('/' + 'n' * 200, b'')
    got = feed(s, Tversion(NOTAG, 256, '9P2000'), Tattach(1, 0, NOFID, 'glenda', ''),
               Twalk(2, 0, 1, ['n' * 200]), Tstat(3, 1))
    assert got[2] == Rwalk(2, [fs.root.children['n' * 200].qid])
    assert got[3] == Rerror(3, E.ETOOBIG)
    assert all(len(encode(r)) <= 256 for r in got)


def test_work_flushed_before_it_started_never_runs_and_never_answers():
    fs, s = session()
    fs.mkfile('/slow', b'late')
    feed(s, Tversion(NOTAG, 8192, '9P2000'), Tattach(1, 0, NOFID, 'glenda', ''),
         Twalk(2, 0, 1, ['slow']))
    feed(s, Topen(3, 1, 0))
    assert feed(s, Tread(4, 1, 0, 10)) == []            # the backend answers later: Work
    (work,) = s.started
    assert s.inflight == {4: work}
    assert feed(s, Tflush(5, 4)) == [Rflush(5)]
    assert work.dead and not s.inflight
    s.complete(work, None)                              # too late: nothing is sent
    assert s.out == []


def test_before_tversion_frames_are_bounded_small():
    _, s = session(msize=1 << 20)
    assert s.framer.msize == 8192
    feed(s, Tversion(NOTAG, 1 << 20, '9P2000'))
    assert s.framer.msize == 1 << 20
    feed(s, Tversion(NOTAG, 1 << 20, 'junk'))           # no session: back to the small bound
    assert s.framer.msize == 8192
