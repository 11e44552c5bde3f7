"""Every error string creepy sends to a client, named once, the errno each stands for, and
the exceptions that carry them.

Clients match on these strings.  Plan 9 programs read Plan 9's wording ("file does not exist",
"permission denied", ...); the Linux kernel's 9P2000 client turns a string into an errno with
a fixed table (net/9p/error.c, matched exactly and case-sensitively), and any string not in it
becomes errno 526, "unknown error".  So every string a POSIX call can provoke is one that table
maps to the errno POSIX gives for it, in Plan 9's wording where the table has it (from fossil,
kfs or u9fs) and in Linux's own where it has none; the strings only a misbehaving client can
provoke (fid misuse, bad names on the wire, session errors) keep Plan 9's.  9P2000.L replies
carry the errno itself: ERRNO below.  Deliberate differences are listed in docs/protocol.md.

Any exception with an `ename` attribute is answered to a 9P client as Rerror(ename) (or as
Rlerror(errno_of(ename))); the service layer relies on that and on nothing else here.
"""

import errno as _errno

# Plan 9's strings that Linux maps as POSIX wants.
ENOENT = "file does not exist"
EEXIST = "file already exists"
EPERM = "permission denied"
ENOTEMPTY = "directory is not empty"            # fossil's; Plan 9's "directory not empty" is unmapped
ENOTDIR = "not a directory"
EINUSE = "file in use"
EEXCL = "exclusive use file already open"
EREADONLY = "read only file system"
EFULL = "file system is full"                   # fossil's; ENOSPC
EBADOFFSET = "bad offset in directory read"
EBIGFILE = "file too big"
EWSTAT = "wstat prohibited"                     # kfs: a change this user may not make, EPERM
ENOTOWNER = EWSTAT                              # not the owner (or a group leader)
ENOTMEMBER = "not a member of proposed group"   # fossil: chgrp to a group one is not in
EDIRMODE = "wstat can't convert between files and directories"
EBADMODEBITS = "illegal mode"
EBADUSER = "unknown user"
EUSERSBAD = "users file refused"                 # followed by why (the users file, fs.py)
EIO = "i/o error"
EUNKNOWNFID = "fid unknown or out of range"
EFIDINUSE = "fid already in use"

# Linux's own wording, where Plan 9 has no string the kernel maps.
EISDIR = "Is a directory"
EDIRLEN = EISDIR                                # truncate(2) of a directory
ERENAMEDIR = EISDIR                             # rename(2) of a file onto a directory
ENAMETOOLONG = "File name too long"
ERENAMELOOP = "Invalid argument"                # rename(2) of a directory into itself
EINVAL = "Invalid argument"
ENOTPERMITTED = "Operation not permitted"
EBUILTIN = ENOTPERMITTED                        # /, /cons, /stats cannot be removed or changed
EUSERSFILE = ENOTPERMITTED                      # /root/users cannot be removed or renamed away
ENODATA = "No data available"                   # an extended attribute that is not there
ENOTSUP = "Operation not supported"
EXDEV = "Invalid cross-device link"             # a rename between trees with different qid spaces
ETOOMANYFIDS = "Too many open files"
ETOOBIG = "Message too long"                    # a reply that would not fit in msize

# Plan 9's strings for what only a misbehaving client (never a POSIX call) provokes.
ENOTOPEN = "fid not open"
EOPEN = "fid already open"
ENOTREAD = "fid not open for reading"
ENOTWRITE = "fid not open for writing"
EBADNAME = "bad character in file name"
EILLEGALNAME = "illegal file name"
ENEGOFF = "negative offset"
EUNKTREE = "unknown tree"
ENOAUTH = "authentication not required"
ENOTAUTHFID = "afid is not an auth fid"
EAUTHTCP = "authentication required: use the posted Unix socket, or start the server with -a"
EAUTHUSER = "attach name does not match the connecting Unix user"
EWORMWR = "wormwr attach is for the owner and allowed users only"
EHALTED = "file system halted"

# The 9P session (creepy/ninep/session.py).
ENOVERSION = "Tversion not seen"
EMSIZE = "msize too small"
EBADTYPE = "unexpected message type"
ETAGINUSE = "tag in use"
ETOOMANYTAGS = "too many requests in flight"
EWALKOPEN = "cannot walk an open fid"
ESHORT = "i/o count too small"
ETOOMANYCONNS = "too many connections"
EINTERNAL = "internal error: "

#: the errno a 9P2000.L reply carries for each string (Linux's table gives the same ones)
ERRNO = {
    ENOENT: _errno.ENOENT, EEXIST: _errno.EEXIST, EPERM: _errno.EACCES,
    ENOTEMPTY: _errno.ENOTEMPTY, ENOTDIR: _errno.ENOTDIR, EINUSE: _errno.ETXTBSY,
    EEXCL: _errno.EAGAIN, EREADONLY: _errno.EROFS, EFULL: _errno.ENOSPC,
    EBADOFFSET: _errno.ESPIPE, EBIGFILE: _errno.EFBIG, EWSTAT: _errno.EPERM,
    ENOTMEMBER: _errno.EPERM, EDIRMODE: _errno.EPERM, EBADMODEBITS: _errno.EINVAL,
    EBADUSER: _errno.EINVAL, EIO: _errno.EIO, EUNKNOWNFID: _errno.EBADF,
    EFIDINUSE: _errno.EBADF, EISDIR: _errno.EISDIR, ENAMETOOLONG: _errno.ENAMETOOLONG,
    EINVAL: _errno.EINVAL, ENOTPERMITTED: _errno.EPERM, ENOTSUP: _errno.EOPNOTSUPP,
    ENODATA: _errno.ENODATA,
    EXDEV: _errno.EXDEV, ETOOMANYFIDS: _errno.EMFILE, ETOOBIG: _errno.EMSGSIZE,
    ENOTOPEN: _errno.EBADF, EOPEN: _errno.EBADF, ENOTREAD: _errno.EBADF,
    ENOTWRITE: _errno.EBADF, EBADNAME: _errno.EINVAL, EILLEGALNAME: _errno.EINVAL,
    ENEGOFF: _errno.EINVAL, EUNKTREE: _errno.ENOENT, ENOAUTH: _errno.EINVAL,
    ENOTAUTHFID: _errno.EINVAL, EAUTHTCP: _errno.EACCES, EAUTHUSER: _errno.EACCES,
    EWORMWR: _errno.EACCES, EHALTED: _errno.EIO, ENOVERSION: _errno.EPROTO,
    EMSIZE: _errno.EINVAL, EBADTYPE: _errno.EOPNOTSUPP, ETAGINUSE: _errno.EPROTO,
    ETOOMANYTAGS: _errno.EAGAIN, EWALKOPEN: _errno.EBADF, ESHORT: _errno.EINVAL,
    ETOOMANYCONNS: _errno.EUSERS,
}


def errno_of(ename):
    """The errno for an error string: its own, or that of the string it starts with (an
    error may add detail after a ':' or a quote), else EIO."""
    n = ERRNO.get(ename)
    if n is not None:
        return n
    for sep in (":", " '"):
        head = ename.split(sep, 1)[0]
        n = ERRNO.get(head)
        if n is not None:
            return n
    return _errno.EIO


class FsError(Exception):
    """A failure to report to the client as it is: the message is a Plan 9 error string."""

    def __init__(self, ename):
        super().__init__(ename)
        self.ename = ename


class CorruptBlock(FsError):
    """A block failed verification: wrong magic, type, address, era or checksum.  str() names
    the block and why; a client is told EIO (the server logs the detail)."""

    def __init__(self, addr, why):
        super().__init__(f"corrupt block {addr}: {why}")
        self.ename = EIO
        self.addr = addr
        self.why = why


class NotCreepy(Exception):
    """The disk holds no valid creepy superblock."""


class DiskFull(FsError):
    def __init__(self, why=EFULL):
        super().__init__(why)


class StoreStopped(FsError):
    """A run-time check of a store invariant failed: the store writes nothing more and the tree
    is read-only.  Clients see "read only file system"; `why` names the fault (log, /stats)."""

    def __init__(self, why):
        super().__init__(EREADONLY)
        self.why = why


class DiskDamaged(Exception):
    """A disk that cannot be served as it is; the message is one line saying why and what to do."""
