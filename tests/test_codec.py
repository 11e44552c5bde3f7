"""The 9P2000 codec: round trips, garbage in, framing.

Hypothesis prints a failing example and a @reproduce_failure line; rerun with
`python -m pytest tests/test_codec.py -k <test name>`.
"""

import struct

import pytest
from hypothesis import given, settings, strategies as st

from creepy.ninep import codec
from creepy.ninep.codec import (
    MESSAGES, NOFID, NOTAG, STAT_FIXED, Framer, ProtocolError, Qid, Stat,
    Rattach, Rauth, Rclunk, Rcreate, Rerror, Rflush, Ropen, Rread, Rremove, Rstat, Rversion,
    Rwalk, Rwrite, Rwstat, Tattach, Tauth, Tclunk, Tcreate, Tflush, Topen, Tread, Tremove,
    Tstat, Tversion, Twalk, Twrite, Twstat,
    decode, encode, encode_parts, pack_stat, unpack_stat,
)

QID_DIR = Qid(codec.QTDIR, 7, 0x0123456789ABCDEF)
QID_FILE = Qid(codec.QTFILE, 0xFFFFFFFF, 2**64 - 1)
STAT = Stat(type=1, dev=2, qid=QID_FILE, mode=0o644, atime=3, mtime=4, length=5,
            name='ünïcødé ☃', uid='glenda', gid='sys', muid='')
MiB = 1 << 20

EXAMPLES = [
    Tversion(NOTAG, 8192, '9P2000'),
    Rversion(NOTAG, MiB + 24, '9P2000'),
    Tversion(NOTAG, 0, ''),
    Tauth(1, 5, 'glenda', ''),
    Rauth(1, Qid(codec.QTAUTH, 0, 1)),
    Tattach(2, 0, NOFID, 'glenda', 'main/active'),
    Tattach(2, 0, NOFID, '', ''),
    Rattach(2, QID_DIR),
    Rerror(3, 'file does not exist'),
    Rerror(3, ''),
    Tflush(4, 3),
    Rflush(4),
    Twalk(5, 0, 1, ()),
    Twalk(5, 0, 1, ('usr', 'glenda', '..', 'lib', 'résumé', '日本語')),
    Twalk(5, 0, 1, tuple('n%d' % i for i in range(16))),
    Rwalk(5, ()),
    Rwalk(5, (QID_DIR,) * 16),
    Topen(6, 1, codec.ORDWR | codec.OTRUNC),
    Ropen(6, QID_FILE, 8168),
    Tcreate(7, 1, 'nouveau fichier ✓', codec.DMDIR | 0o755, codec.OREAD),
    Rcreate(7, QID_DIR, 0),
    Tread(8, 1, 2**64 - 1, 0xFFFFFFFF),
    Rread(8, b''),
    Rread(8, bytes(range(256)) * 4096),
    Twrite(9, 1, 12345, b''),
    Twrite(9, 1, 0, b'\xff' * MiB),
    Rwrite(9, MiB),
    Tclunk(10, 1),
    Rclunk(10),
    Tremove(11, 1),
    Rremove(11),
    Tstat(12, 1),
    Rstat(12, STAT),
    Rstat(12, Stat()),
    Twstat(13, 1, Stat(type=0xFFFF, dev=0xFFFFFFFF, qid=Qid(0xFF, 0xFFFFFFFF, 2**64 - 1),
                       mode=0xFFFFFFFF, atime=0xFFFFFFFF, mtime=0xFFFFFFFF, length=2**64 - 1)),
    Rwstat(13),
]


def test_examples_cover_every_message_type():
    assert {m.__class__ for m in EXAMPLES} == set(MESSAGES)


@pytest.mark.parametrize('msg', EXAMPLES, ids=lambda m: m.__class__.__name__)
def test_every_message_round_trips(msg):
    frame = encode(msg)
    assert struct.unpack_from('<IB', frame) == (len(frame), msg.type)
    back = decode(frame)
    assert back.__class__ is msg.__class__
    assert back == msg


@pytest.mark.parametrize('msg', EXAMPLES, ids=lambda m: m.__class__.__name__)
def test_encode_parts_join_to_the_same_frame(msg):
    assert b''.join(bytes(p) for p in encode_parts(msg)) == encode(msg)


def test_large_payload_is_not_copied_by_encode_parts():
    data = bytearray(MiB)
    head, body = encode_parts(Rread(1, data))
    assert body is data and len(head) == 11


def test_data_may_be_bytes_bytearray_or_memoryview():
    payload = bytes(range(200))
    frames = {encode(Twrite(1, 2, 3, kind(payload))) for kind in (bytes, bytearray, memoryview)}
    assert len(frames) == 1
    wide = memoryview(payload).cast('I')            # 50 items, 200 bytes
    assert decode(encode(Rread(1, wide))).data == payload


def test_decoded_data_is_bytes_even_from_a_memoryview_frame():
    frame = encode(Rread(1, b'hello'))
    assert decode(memoryview(frame)).data == b'hello'
    assert type(decode(bytearray(frame)).data) is bytes


def test_messages_build_positionally_and_by_keyword():
    assert Twalk(tag=1, fid=2, newfid=3, wnames=['a']) == Twalk(1, 2, 3, ('a',))
    assert Tcreate(1, 2, name='x', perm=0o644, mode=1).perm == 0o644
    assert Stat(name='x').qid == Qid(0, 0, 0)
    assert Tclunk(1, 2) != Tremove(1, 2)
    assert Ropen(1, QID_DIR, 0) != Rcreate(1, QID_DIR, 0)


def test_messages_have_readable_reprs():
    assert repr(Tclunk(1, 2)) == 'Tclunk(tag=1, fid=2)'
    assert repr(Rread(1, b'x' * 100)) == 'Rread(tag=1, data=<100 bytes>)'
    assert 'name=' in repr(STAT)


def changed(value):
    """A value of the same kind as value, but different."""
    if isinstance(value, Qid):
        return value._replace(path=value.path ^ 1)
    if isinstance(value, Stat):
        return Stat(name=value.name + 'x')
    if isinstance(value, int):
        return value ^ 1
    if isinstance(value, tuple):
        return value[1:] if value else ('x',)
    return value + (b'x' if isinstance(value, bytes) else 'x')


@pytest.mark.parametrize('msg', EXAMPLES, ids=lambda m: m.__class__.__name__)
def test_messages_differing_in_one_field_are_unequal(msg):
    for name in msg._fields:
        other = msg.__class__(*(getattr(msg, f) for f in msg._fields))
        assert other == msg
        setattr(other, name, changed(getattr(msg, name)))
        assert other != msg, name


def test_twalk_refuses_a_str_for_wnames():
    with pytest.raises(TypeError):
        Twalk(1, 2, 3, 'usr')


@pytest.mark.parametrize('msg', [
    Twalk(1, 2, 3, ['x'] * 17),
    Rwalk(1, [QID_DIR] * 17),
    Tclunk(1, 2**32),
    Tflush(1, -1),
    Rerror(1, 'x' * 65536),
    Rstat(1, Stat(length=-1)),
])
def test_encode_rejects_values_out_of_range_with_valueerror(msg):
    with pytest.raises(ValueError):
        encode(msg)


def test_encode_rejects_non_messages_with_typeerror():
    with pytest.raises(TypeError):
        encode(object())


# -- stat entries -------------------------------------------------------------

class FileRecord:
    """A stand-in for the file-system layer's own record type."""
    def __init__(self):
        self.type, self.dev, self.qid, self.mode = 0, 0, (0x80, 3, 99), codec.DMDIR | 0o775
        self.atime, self.mtime, self.length = 10, 20, 0
        self.name, self.uid, self.gid, self.muid = 'usr', 'adm', 'adm', 'glenda'


def test_pack_stat_accepts_any_object_with_stat_attributes():
    st, end = unpack_stat(pack_stat(FileRecord()))
    assert st == Stat(qid=Qid(0x80, 3, 99), mode=codec.DMDIR | 0o775, atime=10, mtime=20,
                      name='usr', uid='adm', gid='adm', muid='glenda')


def test_stat_fixed_is_the_size_of_a_stat_with_empty_strings():
    assert len(pack_stat(Stat())) == STAT_FIXED


def test_pack_stat_wraps_qid_version_to_32_bits():
    st, _ = unpack_stat(pack_stat(Stat(qid=Qid(0, 2**32 + 5, 1))))
    assert st.qid == Qid(0, 5, 1)


def test_unpack_stat_reads_consecutive_entries_by_offset():
    a, b = Stat(name='a'), Stat(name='bb', length=7)
    buf = pack_stat(a) + pack_stat(b)
    first, off = unpack_stat(buf)
    second, end = unpack_stat(buf, off)
    assert (first, second, end) == (a, b, len(buf))
    assert unpack_stat(memoryview(buf), off)[0] == b


def test_unpack_stat_rejects_every_truncation():
    entry = pack_stat(STAT)
    for cut in range(len(entry)):
        with pytest.raises(ProtocolError):
            unpack_stat(entry[:cut])


def test_unpack_stat_rejects_size_that_disagrees_with_strings():
    entry = bytearray(pack_stat(STAT) + b'xx')
    struct.pack_into('<H', entry, 0, len(entry) - 2)      # claims the 2 extra bytes
    with pytest.raises(ProtocolError):
        unpack_stat(bytes(entry))


# -- malformed frames ---------------------------------------------------------

def frame(mtype, tag, body):
    return struct.pack('<IBH', 7 + len(body), mtype, tag) + body


def test_truncated_frame_is_a_fatal_protocol_error():
    good = encode(Tread(5, 1, 0, 10))
    with pytest.raises(ProtocolError) as e:
        decode(good[:-1])
    assert e.value.fatal and e.value.tag == 5


def test_frame_shorter_than_a_header_has_no_tag():
    with pytest.raises(ProtocolError) as e:
        decode(b'\x05\x00\x00\x00\x64')
    assert e.value.tag is None and e.value.fatal


def test_body_too_short_for_its_type_keeps_the_tag():
    with pytest.raises(ProtocolError) as e:
        decode(frame(Tread.type, 42, b'\x01\x00'))
    assert e.value.tag == 42 and not e.value.fatal


def test_trailing_bytes_are_a_protocol_error():
    with pytest.raises(ProtocolError) as e:
        decode(frame(Tclunk.type, 9, struct.pack('<IB', 1, 0)))
    assert e.value.tag == 9


def test_unknown_type_99_keeps_its_tag():
    with pytest.raises(ProtocolError) as e:
        decode(frame(99, 0x1234, b'whatever'))
    assert e.value.tag == 0x1234 and not e.value.fatal
    assert 'unknown message type 99' in str(e.value)


def test_terror_106_is_an_unknown_type():
    with pytest.raises(ProtocolError) as e:
        decode(frame(106, 3, b''))
    assert e.value.tag == 3


def test_string_length_past_the_end_is_a_protocol_error():
    body = struct.pack('<IH', 8192, 200) + b'9P2000'
    with pytest.raises(ProtocolError) as e:
        decode(frame(Tversion.type, NOTAG, body))
    assert e.value.tag == NOTAG


def test_seventeen_walk_names_are_a_protocol_error():
    names = b''.join(struct.pack('<H', 1) + b'a' for _ in range(17))
    with pytest.raises(ProtocolError) as e:
        decode(frame(Twalk.type, 7, struct.pack('<IIH', 0, 1, 17) + names))
    assert e.value.tag == 7 and 'at most 16' in str(e.value)


def test_sixteen_walk_names_decode():
    names = b''.join(struct.pack('<H', 1) + b'a' for _ in range(16))
    msg = decode(frame(Twalk.type, 7, struct.pack('<IIH', 0, 1, 16) + names))
    assert msg.wnames == ('a',) * 16


def test_invalid_utf8_is_a_protocol_error():
    body = struct.pack('<IIH', 0, 1, 1) + struct.pack('<H', 2) + b'\xc3\x28'
    with pytest.raises(ProtocolError) as e:
        decode(frame(Twalk.type, 8, body))
    assert e.value.tag == 8


def test_count_that_disagrees_with_data_is_a_protocol_error():
    body = struct.pack('<IQI', 1, 0, 10) + b'12345'
    with pytest.raises(ProtocolError):
        decode(frame(Twrite.type, 1, body))
    with pytest.raises(ProtocolError):
        decode(frame(Rread.type, 1, struct.pack('<I', 3) + b'12345'))


def test_rstat_n_must_match_the_stat_entry():
    entry = pack_stat(STAT)
    good = frame(Rstat.type, 1, struct.pack('<H', len(entry)) + entry)
    assert decode(good).stat == STAT
    for n in (len(entry) - 1, len(entry) + 1, 0):
        with pytest.raises(ProtocolError):
            decode(frame(Rstat.type, 1, struct.pack('<H', n) + entry))


# -- framing ------------------------------------------------------------------

def test_framer_yields_many_small_frames_from_one_buffer():
    msgs = [Tclunk(i, i) for i in range(10000)]
    f = Framer(8192)
    f.feed(b''.join(encode(m) for m in msgs))
    assert [decode(x) for x in f.frames()] == msgs
    assert f.pending() == 0


def test_framer_keeps_a_partial_frame_until_it_is_complete():
    data = encode(Rerror(1, 'permission denied'))
    f = Framer(8192)
    f.feed(data[:3])
    assert list(f.frames()) == []
    f.feed(data[3:10])
    assert list(f.frames()) == []
    f.feed(data[10:])
    assert list(f.frames()) == [data]


def test_framer_reassembles_1mib_frames_arriving_in_64kib_pieces():
    frames = [encode(Twrite(i, 1, 0, bytes([i]) * MiB)) for i in range(4)]
    stream = b''.join(frames)
    f = Framer(MiB + 24)
    got = []
    for i in range(0, len(stream), 65536):
        f.feed(stream[i:i + 65536])
        got.extend(f.frames())
    assert got == frames
    assert len(f._buf) <= 4 * MiB          # grew to hold a frame, not the stream


def test_framer_receives_in_place_through_get_buffer():
    frames = [encode(Rread(i, bytes(i * 1000))) for i in range(50)]
    stream = b''.join(frames)
    f = Framer(MiB)
    got, pos = [], 0
    while pos < len(stream):
        buf = f.get_buffer(-1)
        n = min(len(buf), 3000, len(stream) - pos)
        buf[:n] = stream[pos:pos + n]
        f.buffer_updated(n)
        pos += n
        got.extend(f.frames())
    assert got == frames


def test_framer_receives_a_large_frame_into_a_buffer_of_its_own():
    # The first quarter of a large frame comes through the shared buffer; then get_buffer
    # hands out exactly what is missing of it (no receive runs past it), in a buffer that
    # becomes the frame.
    frame = encode(Twrite(1, 1, 0, bytes(range(256)) * 4096))      # 1 MiB of payload
    small = encode(Tclunk(2, 1))
    f = Framer(MiB + 24)
    pos = 0
    while True:
        rest = f.get_buffer(-1)
        if len(rest) == len(frame) - pos:
            break
        n = min(len(rest), len(frame) - pos)
        rest[:n] = frame[pos:pos + n]
        f.buffer_updated(n)
        pos += n
        assert list(f.frames()) == []
    assert len(frame) // 4 <= pos <= len(frame) // 2 + Framer.READ_SIZE
    rest[:] = frame[pos:]
    f.buffer_updated(len(rest))
    buf = f.get_buffer(-1)
    buf[:len(small)] = small
    f.buffer_updated(len(small))
    got = list(f.frames())
    assert got == [frame, small]
    assert rest.obj is got[0]                   # the frame is the buffer it was received into
    assert f.pending() == 0 and len(f._buf) <= len(frame)      # the shared buffer stays smaller


def test_framer_with_room_ahead_receives_a_large_frame_in_place_from_its_size_field():
    # With an Ahead that has room, the frame's buffer is allocated whole once its size field
    # is here: everything after the first read is received into it, nothing is copied, and
    # the room taken comes back when the frame is whole.  Without room, a quarter first.
    frame = encode(Twrite(1, 1, 0, bytes(range(256)) * 4096))      # 1 MiB of payload
    ahead = codec.Ahead(2 * MiB)
    f = Framer(MiB + 24, ahead)
    first = f.get_buffer(-1)
    first[:100] = frame[:100]
    f.buffer_updated(100)
    rest = f.get_buffer(-1)
    assert len(rest) == len(frame) - 100               # the frame's own buffer, at once
    assert ahead.used == len(frame) - 100
    rest[:] = frame[100:]
    f.buffer_updated(len(rest))
    assert ahead.used == 0
    got = list(f.frames())
    assert got == [frame] and rest.obj is got[0]
    # the room is shared: a second framer finds none and waits for a quarter
    ahead.used = ahead.limit - 1000
    g = Framer(MiB + 24, ahead)
    g.get_buffer(-1)[:100] = frame[:100]
    g.buffer_updated(100)
    assert len(g.get_buffer(-1)) < len(frame) // 4 and ahead.used == ahead.limit - 1000
    ahead.used = 0
    # a frame cut off by the end of the stream gives its room back when the framer closes
    h = Framer(MiB + 24, ahead)
    h.get_buffer(-1)[:100] = frame[:100]
    h.buffer_updated(100)
    assert len(h.get_buffer(-1)) == len(frame) - 100 and ahead.used == len(frame) - 100
    h.close()
    assert ahead.used == 0 and h.pending() == 0


@given(st.lists(st.sampled_from([0, 1, 100, 70000, 200000]), max_size=12),
       st.randoms(use_true_random=False), st.booleans())
@settings(max_examples=100, deadline=None)
def test_framer_fed_large_and_small_frames_in_any_pieces_yields_them_in_order(sizes, rnd, by_feed):
    frames = [encode(Rread(i, bytes([i % 256]) * n)) for i, n in enumerate(sizes)]
    stream = b''.join(frames)
    f = Framer(MiB)
    got = []
    pos = 0
    while pos < len(stream):
        n = rnd.choice([1, 7, 1000, 65536, 300000])
        if by_feed:
            f.feed(stream[pos:pos + n])
            pos += n
        else:
            buf = f.get_buffer(-1)
            n = min(n, len(buf), len(stream) - pos)
            buf[:n] = stream[pos:pos + n]
            f.buffer_updated(n)
            pos += n
        if rnd.random() < 0.5:
            got.extend(f.frames())
    got.extend(f.frames())
    assert got == frames
    assert f.pending() == 0


def test_framer_buffer_follows_what_has_arrived_of_a_large_frame():
    # A peer announces a 1 MiB frame (msize allows it) and sends it a byte at a time: the
    # buffer stays the size it had, not the frame's.  Then the rest comes as fast as the
    # buffer takes it: a few reads, each as large as the buffer offers, and the frame is whole.
    frame = encode(Twrite(7, 1, 0, bytes(range(256)) * 4096))
    f = Framer(MiB + 24)
    first = len(f.get_buffer(-1))
    pos = 0
    for _ in range(200):
        buf = f.get_buffer(-1)
        buf[:1] = frame[pos:pos + 1]
        f.buffer_updated(1)
        pos += 1
        assert list(f.frames()) == []
    assert len(f._buf) <= max(first, 2 * Framer.READ_SIZE) + 64
    reads, got = 0, []
    while pos < len(frame):
        buf = f.get_buffer(-1)
        n = min(len(buf), len(frame) - pos)
        buf[:n] = frame[pos:pos + n]
        f.buffer_updated(n)
        pos += n
        reads += 1
        assert len(f._buf) <= 4 * pos + 2 * Framer.READ_SIZE     # never far ahead of the data
        got.extend(f.frames())
    assert got == [frame]
    assert reads <= 8


@pytest.mark.parametrize('size', [0, 6, 8193, 0xFFFFFFFF])
def test_framer_size_field_outside_7_to_msize_is_fatal(size):
    f = Framer(8192)
    f.feed(struct.pack('<IBH', size, 100, 1))
    with pytest.raises(ProtocolError) as e:
        list(f.frames())
    assert e.value.fatal


def test_framer_follows_a_lowered_msize():
    f = Framer(MiB)
    f.msize = 8192
    f.feed(encode(Rread(1, bytes(9000))))
    with pytest.raises(ProtocolError):
        list(f.frames())


# -- properties ---------------------------------------------------------------

u8, u16, u32, u64 = (st.integers(0, 2**b - 1) for b in (8, 16, 32, 64))
text = st.text(max_size=40)
names = st.lists(text, max_size=16)
qids = st.builds(Qid, u8, u32, u64)
payload = st.binary(max_size=3000)
stats = st.builds(Stat, type=u16, dev=u32, qid=qids, mode=u32, atime=u32, mtime=u32,
                  length=u64, name=text, uid=text, gid=text, muid=text)

messages = st.one_of(
    st.builds(Tversion, u16, u32, text), st.builds(Rversion, u16, u32, text),
    st.builds(Tauth, u16, u32, text, text), st.builds(Rauth, u16, qids),
    st.builds(Tattach, u16, u32, u32, text, text), st.builds(Rattach, u16, qids),
    st.builds(Rerror, u16, text), st.builds(Tflush, u16, u16), st.builds(Rflush, u16),
    st.builds(Twalk, u16, u32, u32, names), st.builds(Rwalk, u16, st.lists(qids, max_size=16)),
    st.builds(Topen, u16, u32, u8), st.builds(Ropen, u16, qids, u32),
    st.builds(Tcreate, u16, u32, text, u32, u8), st.builds(Rcreate, u16, qids, u32),
    st.builds(Tread, u16, u32, u64, u32), st.builds(Rread, u16, payload),
    st.builds(Twrite, u16, u32, u64, payload), st.builds(Rwrite, u16, u32),
    st.builds(Tclunk, u16, u32), st.builds(Rclunk, u16),
    st.builds(Tremove, u16, u32), st.builds(Rremove, u16),
    st.builds(Tstat, u16, u32), st.builds(Rstat, u16, stats),
    st.builds(Twstat, u16, u32, stats), st.builds(Rwstat, u16),
)


@given(messages)
def test_any_message_round_trips(msg):
    assert decode(encode(msg)) == msg


@given(st.binary(max_size=200))
@settings(max_examples=500)
def test_arbitrary_bytes_decode_to_a_message_or_protocol_error(data):
    try:
        decode(data)
    except ProtocolError:
        pass


@given(st.sampled_from(range(95, 130)), u16, st.binary(max_size=120))
@settings(max_examples=1000)
def test_arbitrary_bodies_under_a_valid_header_decode_or_raise_protocol_error(mtype, tag, body):
    # Random bytes rarely pass the size check; this reaches every per-type decoder.
    try:
        decode(frame(mtype, tag, body))
    except ProtocolError as e:
        assert e.tag == tag and not e.fatal


@given(messages, st.data())
@settings(max_examples=300)
def test_corrupted_valid_frames_decode_or_raise_protocol_error(msg, data):
    raw = bytearray(encode(msg))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(4, len(raw) - 1)) if len(raw) > 4 else 0
        raw[i] = data.draw(u8)
    try:
        decode(bytes(raw))
    except ProtocolError:
        pass


@given(st.lists(messages, max_size=20), st.randoms(use_true_random=False))
@settings(max_examples=200)
def test_framer_fed_a_random_split_yields_exactly_the_frames(msgs, rnd):
    frames = [encode(m) for m in msgs]
    stream = b''.join(frames)
    cuts = sorted(rnd.sample(range(len(stream) + 1), min(len(stream) + 1, rnd.randint(0, 30))))
    f = Framer(1 << 16)
    got = []
    prev = 0
    for cut in cuts + [len(stream)]:
        f.feed(stream[prev:cut])
        prev = cut
        got.extend(f.frames())
    assert got == frames
    assert f.pending() == 0


# -- 9P2000.L ---------------------------------------------------------------------------------

def _l_example(cls, tag=7):
    """A message of cls with every field set to a distinct value of its kind."""
    vals = []
    for i, (name, kind) in enumerate(cls._layout):
        if kind == 'Q':
            vals.append(Qid(codec.QTDIR, 3 + i, 2**63 + i))
        elif kind == 's':
            vals.append('näme-%d' % i)
        elif kind == 'D':
            vals.append(bytes(range(i, i + 40)))
        else:
            vals.append((2 ** (8 * kind)) - 1 - i)
    return cls(tag, *vals)


L_ONLY = [cls for cls in codec.L_MESSAGES if cls not in MESSAGES]


@pytest.mark.parametrize('cls', L_ONLY, ids=lambda c: c.__name__)
def test_every_9p2000l_message_round_trips_by_its_dialect(cls):
    msg = _l_example(cls)
    frame = encode(msg)
    assert struct.unpack_from('<IB', frame) == (len(frame), cls.type)
    assert codec.NINEP2000L.decode(frame) == msg
    with pytest.raises(ProtocolError):          # not a 9P2000 message
        decode(frame)
    for cut in range(7, len(frame)):            # every truncation is refused with the tag
        if cls is codec.Tfsync and cut == 11:
            continue                            # the older form, without datasync
        bad = bytearray(frame[:cut])
        bad[:4] = struct.pack('<I', cut)
        with pytest.raises(ProtocolError) as e:
            codec.NINEP2000L.decode(bytes(bad))
        assert e.value.tag == 7 and not e.value.fatal


def test_the_dialects_share_what_they_have_in_common_and_differ_in_attach():
    common = set(MESSAGES) & set(codec.L_MESSAGES)
    assert Twalk in common and Tread in common and Rread in common
    assert Topen not in codec.L_MESSAGES and Rerror not in codec.L_MESSAGES
    frame = encode(codec.TattachL(1, 0, NOFID, 'glenda', '', 1000))
    assert codec.NINEP2000L.decode(frame).n_uname == 1000
    with pytest.raises(ProtocolError):          # 9P2000's Tattach has no n_uname
        decode(frame)


def test_tfsync_without_datasync_as_older_kernels_send_it():
    frame = struct.pack('<IBHI', 11, 50, 3, 9)
    assert codec.NINEP2000L.decode(frame) == codec.Tfsync(3, 9, 0)


def test_readdir_entries_pack_and_unpack():
    q = Qid(codec.QTDIR, 1, 99)
    data = codec.pack_dirent(q, 1, 4, 'dir') + codec.pack_dirent(Qid(0, 0, 5), 2, 8, 'ünï')
    assert codec.unpack_dirents(data) == [(q, 1, 4, 'dir'), (Qid(0, 0, 5), 2, 8, 'ünï')]
    with pytest.raises(ProtocolError):
        codec.unpack_dirents(data[:-1])


@given(st.sampled_from(sorted({c.type for c in codec.L_MESSAGES})), u16, st.binary(max_size=160))
@settings(max_examples=1000)
def test_arbitrary_9p2000l_bodies_decode_or_raise_protocol_error(mtype, tag, body):
    try:
        codec.NINEP2000L.decode(frame(mtype, tag, body))
    except ProtocolError as e:
        assert e.tag == tag and not e.fatal


_u32 = st.integers(0, 2**32 - 1)
_u64 = st.integers(0, 2**64 - 1)
_name = st.text(st.characters(blacklist_categories=('Cs',)), max_size=20)
HOT_REQUESTS = {
    Twalk: st.builds(Twalk, _u16 := st.integers(0, 2**16 - 1), _u32, _u32,
                     st.lists(_name, max_size=16)),
    Tstat: st.builds(Tstat, _u16, _u32), Tclunk: st.builds(Tclunk, _u16, _u32),
    Tremove: st.builds(Tremove, _u16, _u32),
    Topen: st.builds(Topen, _u16, _u32, st.integers(0, 255)),
    Tcreate: st.builds(Tcreate, _u16, _u32, _name, _u32, st.integers(0, 255)),
    Tread: st.builds(Tread, _u16, _u32, _u64, _u32),
    Twrite: st.builds(Twrite, _u16, _u32, _u64, st.binary(max_size=100)),
    codec.Tlopen: st.builds(codec.Tlopen, _u16, _u32, _u32),
    codec.Tlcreate: st.builds(codec.Tlcreate, _u16, _u32, _name, _u32, _u32, _u32),
    codec.Tgetattr: st.builds(codec.Tgetattr, _u16, _u32, _u64),
    codec.Treaddir: st.builds(codec.Treaddir, _u16, _u32, _u64, _u32),
}


@pytest.mark.parametrize('cls', HOT_REQUESTS, ids=lambda c: c.__name__)
@given(data=st.data())
@settings(max_examples=60, deadline=None)
def test_hot_requests_unpack_to_their_fields_and_refuse_a_byte_short_or_over(cls, data):
    # The session answers these from cls.unpack(frame) without building the message
    # (session.HOT): the fields must be the message's, and a frame a byte too short or too
    # long must raise ProtocolError as decoding it does.
    from creepy.ninep.session import HOT
    assert any(u == cls.unpack for table in HOT.values() for u, _ in table.values())
    m = data.draw(HOT_REQUESTS[cls])
    frame = encode(m)
    fields = next(c.__slots__ for c in cls.__mro__ if c.__dict__.get('__slots__'))
    assert fields[0] == 'tag'
    assert cls.unpack(frame) == tuple(getattr(m, f) for f in fields[1:])
    for bad in (frame[:-1], frame + b'\0'):
        bad = struct.pack('<I', len(bad)) + bad[4:]
        with pytest.raises(ProtocolError):
            cls.unpack(bad)
