"""Advisory byte-range locks, as POSIX fcntl(2) gives them and 9P2000.L's Tlock carries them.

Locks are per server and advisory: they bind only clients that ask for them, and nothing else
on the tree changes.  An owner is whoever the client names (its connection, client_id and
proc_id); its locks on one file are kept as disjoint ranges, and a new lock or unlock replaces
the owner's ranges it covers, splitting them as fcntl does.  Pure logic: no I/O, no 9P.
"""

RDLCK, WRLCK, UNLCK = 0, 1, 2           # Tlock's type (P9_LOCK_TYPE_*)
SUCCESS, BLOCKED, ERROR = 0, 1, 2       # Rlock's status (P9_LOCK_*)
END = 1 << 64                           # a length of 0 reaches past every offset


class Lock:
    __slots__ = ("owner", "type", "start", "end", "holder", "proc_id", "client_id")

    def __init__(self, owner, ltype, start, end, holder, proc_id, client_id):
        self.owner = owner          # (connection, client_id, proc_id)
        self.type = ltype
        self.start = start
        self.end = end              # exclusive
        self.holder = holder        # the open file it was taken through (released with it)
        self.proc_id = proc_id
        self.client_id = client_id


def _span(start, length):
    return start, (END if length == 0 else min(END, start + length))


class Locks:
    """The locks of every file, keyed by a file identity the tree chooses."""

    def __init__(self):
        self.byfile = {}            # file key -> [Lock]

    def conflict(self, key, owner, ltype, start, length):
        """The first lock of another owner that a lock of ltype on the range would conflict
        with, or None."""
        s, e = _span(start, length)
        for lk in self.byfile.get(key, ()):
            if lk.owner != owner and lk.start < e and s < lk.end and (
                    lk.type == WRLCK or ltype == WRLCK):
                return lk
        return None

    def lock(self, key, owner, ltype, start, length, holder, proc_id, client_id):
        """Set (RDLCK, WRLCK) or clear (UNLCK) owner's lock on the range: SUCCESS, or BLOCKED
        when another owner's lock is in the way (the client retries a blocking lock)."""
        if ltype not in (RDLCK, WRLCK, UNLCK):
            return ERROR
        if ltype != UNLCK and self.conflict(key, owner, ltype, start, length) is not None:
            return BLOCKED
        s, e = _span(start, length)
        kept = []
        for lk in self.byfile.get(key, ()):
            if lk.owner != owner or lk.end <= s or e <= lk.start:
                kept.append(lk)
                continue
            if lk.start < s:            # the owner's range sticks out on the left: keep that
                kept.append(Lock(lk.owner, lk.type, lk.start, s, lk.holder, lk.proc_id,
                                 lk.client_id))
            if e < lk.end:              # and on the right
                kept.append(Lock(lk.owner, lk.type, e, lk.end, lk.holder, lk.proc_id,
                                 lk.client_id))
        if ltype != UNLCK:
            kept.append(Lock(owner, ltype, s, e, holder, proc_id, client_id))
        if kept:
            self.byfile[key] = kept
        else:
            self.byfile.pop(key, None)
        return SUCCESS

    def release(self, match):
        """Drop every lock for which match(lock) is true (a fid clunked, a client gone)."""
        for key in list(self.byfile):
            kept = [lk for lk in self.byfile[key] if not match(lk)]
            if kept:
                self.byfile[key] = kept
            else:
                del self.byfile[key]
