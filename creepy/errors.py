"""Every error string creepy sends to a client, named once, and the exceptions that carry them.

Clients match on Plan 9's strings ("file does not exist", "permission denied", ...), so the
strings follow Plan 9's where one exists.  Any exception with an `ename` attribute is answered
to a 9P client as Rerror(ename); the service layer relies on that and on nothing else here.
"""

# Plan 9's own strings (libc/errstr and the kernel), which clients recognise.
ENOENT = "file does not exist"
EEXIST = "file already exists"
EPERM = "permission denied"
ENOTEMPTY = "directory not empty"
ENOTDIR = "not a directory"
EISDIR = "is a directory"
EINUSE = "file in use"
EEXCL = "exclusive use file already open"
EBADMODE = "wrong open mode for a directory"
ENOTOPEN = "fid not open"
EOPEN = "fid already open"
ENOTREAD = "fid not open for reading"
ENOTWRITE = "fid not open for writing"
EREADONLY = "read only file system"
EFULL = "file system full"
EBADNAME = "bad character in file name"
EILLEGALNAME = "illegal file name"
ENAMETOOLONG = "file name too long"
EBADOFFSET = "bad offset in directory read"
ENEGOFF = "negative offset"
EBIGFILE = "file too big"
ENOTOWNER = "not owner"
ENOTMEMBER = "not in group"
EGROUPLEADER = "not owner or group leader"
EDIRMODE = "can't change directory bit"
EBADMODEBITS = "unknown bits in mode"
EDIRLEN = "can't set length of a directory"
ERENAMEDIR = "can't rename onto a directory"
ERENAMELOOP = "can't move a directory into itself"
EBUILTIN = "can't change a built-in file"
EUSERSFILE = "can't remove the users file"
EUSERSBAD = "users file refused"
EUNKTREE = "unknown tree"
ENOAUTH = "authentication not required"
ENOTAUTHFID = "afid is not an auth fid"
EAUTHTCP = "authentication required: use the posted Unix socket, or start the server with -a"
EAUTHUSER = "attach name does not match the connecting Unix user"
EBADUSER = "unknown user"
EWORMWR = "wormwr attach is for the owner and allowed users only"
EIO = "i/o error"
EHALTED = "file system halted"


# The 9P session (creepy/ninep/server.py).
ENOVERSION = "Tversion not seen"
EMSIZE = "msize too small"
EBADTYPE = "unexpected message type"
ETAGINUSE = "tag in use"
ETOOMANYTAGS = "too many requests in flight"
EFIDINUSE = "fid in use"
ETOOMANYFIDS = "too many fids"
EUNKNOWNFID = "unknown fid"
EWALKOPEN = "cannot walk an open fid in place"
ESHORT = "i/o count too small"
EINTERNAL = "internal error: "


class FsError(Exception):
    """A failure to report to the client as it is: the message is a Plan 9 error string."""

    def __init__(self, ename):
        super().__init__(ename)
        self.ename = ename


class CorruptBlock(FsError):
    """A block failed verification: wrong magic, type, address, era or checksum."""

    def __init__(self, addr, why):
        super().__init__(f"corrupt block {addr}: {why}")
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
