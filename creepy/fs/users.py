"""The users table: who exists, who belongs to which group, who may do what.

This is the tree layer's view of the users file (``/root/users``, see creepy(4)).
It is pure logic: it parses text, answers questions and renders console output.
It must never do I/O, never know about 9P, and never raise anything but
``UsersError`` for bad input.

File format (the one Plan 9's fossil and kfs use, so ``cp /adm/users`` works)::

    # comment; '#' starts a comment anywhere on a line
    uid:name:leader:member,member,...
    !uid:name:leader:members        a leading '!' disables the user

Exactly four ':'-separated fields; blanks around fields and members are
trimmed; blank lines are ignored.  The uid field is either a number (kfs
style, ``-1:adm:adm:``) or a name (fossil style, ``adm:adm:adm:sys``).  It is
kept and printed, never relied upon: files and sessions name users by name.

A table is checked as a whole: names and uids are unique, every leader and
member is a user of the table.  ``Users.parse`` raises ``UsersError`` naming
the first bad line; the caller then keeps its old table (``reload`` does that).
A file the server is to use must also keep its owner in charge (``Users.load``):
it names at least one user, the owner is one of them and is enabled, and the
owner is in the write group if there is one; else the owner could not reach
the console and the users file (creepy(4): "the owner of the file server
process is always allowed to access the console").

Vocabulary used by every query below:

member
    ``user`` is a member of ``group`` when user == group, or user is the
    group's leader, or user is in the group's member list.
leader
    the group's leader if it names one; if it has none, any member leads.
disabled
    a disabled user cannot attach and cannot be resolved; for permissions it
    is treated like a user unknown to the table: only "other" bits apply and
    it is a member of no group.  A disabled user still works as a group.
none
    who unknown users become; like fossil, it only ever gets the "other" bits.
allowed
    users let through every permission check by the console's ``allow``.
write group
    if a user named ``write`` exists, only its members (``write`` itself, its
    leader, its member list) and allowed users may modify anything: create,
    write, wstat, remove (``canwrite``; fossil's users(6) and 9p.c).  The tree
    applies that rule next to ``access``.
"""

from __future__ import annotations

import unicodedata

__all__ = ["UsersError", "User", "Users", "MAXNAME", "MAXFILE", "NONE", "check_name", "AREAD",
           "AWRITE", "AEXEC"]

#: longest user name, in bytes of UTF-8
MAXNAME = 64

#: largest users file, in bytes (fossil's /adm/users is about a KiB)
MAXFILE = 1 << 20

#: who unknown users become (attach(5))
NONE = "none"

#: the group of the console (/cons is owner, adm, 0660)
ADM = "adm"

#: the ``want`` bits of ``Users.access`` (the same values as 9P's rwx bits for "other")
AREAD = 4
AWRITE = 2
AEXEC = 1

#: the group whose members alone may modify the tree, when it exists
WRITEGROUP = "write"


class UsersError(Exception):
    """A bad users file, or a console request about users that cannot be met.

    ``str(err)`` is the text to show on the console; ``line`` is the 1-based
    line of the users file at fault, or None.
    """

    def __init__(self, msg: str, line: int | None = None):
        self.line = line
        super().__init__(f"line {line}: {msg}" if line is not None else msg)


def check_name(name: str) -> str | None:
    """Why ``name`` cannot be a user name, or None if it can."""
    if not name:
        return "empty name"
    if len(name.encode("utf-8", "surrogatepass")) > MAXNAME:
        return f"name longer than {MAXNAME} bytes"
    for c in name:
        if c in ":,#" or c.isspace() or unicodedata.category(c) in ("Cc", "Cs", "Zl", "Zp"):
            return f"bad character {c!r} in name {name!r}"
    return None


def _check_uid(uid: str) -> str | None:
    if _numeric(uid):
        return None
    why = check_name(uid)
    return why and f"bad uid: {why}"


def _numeric(uid: str) -> bool:
    digits = uid[1:] if uid[:1] == "-" else uid
    return digits.isascii() and digits.isdigit()


def _uidkey(uid: str) -> tuple:
    # numbers first, in numeric order, then name-like uids in text order
    return (0, int(uid), "") if _numeric(uid) else (1, 0, uid)


class User:
    """One line of the users file."""

    __slots__ = ("uid", "name", "leader", "members", "enabled")

    def __init__(self, uid: str, name: str, leader: str = "", members: tuple[str, ...] = (),
                 enabled: bool = True):
        self.uid = uid
        self.name = name
        self.leader = leader
        self.members = tuple(members)
        self.enabled = enabled

    def line(self) -> str:
        """The canonical users-file line, also what the console's ``users`` prints."""
        bang = "" if self.enabled else "!"
        return f"{bang}{self.uid}:{self.name}:{self.leader}:{','.join(self.members)}"

    def __eq__(self, other):
        if not isinstance(other, User):
            return NotImplemented
        return all(getattr(self, a) == getattr(other, a) for a in User.__slots__)

    def __repr__(self):
        return f"User({self.line()!r})"


class Users:
    """The users table, plus the console's set of allowed users.

    Build one with ``Users.parse(text)`` or ``Users.defaults(owner)``.
    """

    __slots__ = ("_byname", "allowed")

    def __init__(self, users: list[User] = ()):
        self._byname: dict[str, User] = {u.name: u for u in users}
        #: names let through every permission check (console ``allow``)
        self.allowed: set[str] = set()

    # -- building ---------------------------------------------------------

    @classmethod
    def parse(cls, text: str) -> Users:
        """Parse a users file; raise ``UsersError`` naming the first bad line."""
        users: list[User] = []
        lineof: dict[str, int] = {}
        uids: dict[str, str] = {}
        for n, raw in enumerate(text.split("\n"), 1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            enabled = not line.startswith("!")
            if not enabled:
                line = line[1:].lstrip()
            fields = [f.strip() for f in line.split(":")]
            if len(fields) != 4:
                raise UsersError(f"want 4 ':'-separated fields, got {len(fields)}", n)
            uid, name, leader, mlist = fields
            why = _check_uid(uid) or check_name(name) or (leader and check_name(leader))
            if why:
                raise UsersError(why, n)
            if _numeric(uid):
                uid = str(int(uid))
            if name in lineof:
                raise UsersError(f"user {name!r} already defined at line {lineof[name]}", n)
            if uid in uids:
                raise UsersError(f"uid {uid} already used by {uids[uid]!r}", n)
            members: list[str] = []
            for m in mlist.split(","):
                m = m.strip()
                if not m or m in members:
                    continue  # "a,,b", a trailing comma or a repeat add nobody
                why = check_name(m)
                if why:
                    raise UsersError(why, n)
                members.append(m)
            lineof[name] = n
            uids[uid] = name
            users.append(User(uid, name, leader, tuple(members), enabled))
        for u in users:
            for ref in (u.leader, *u.members):
                if ref and ref not in lineof:
                    raise UsersError(f"unknown user {ref!r} in group {u.name!r}", lineof[u.name])
        return cls(users)

    @classmethod
    def load(cls, data: bytes, owner: str) -> Users:
        """The table of a users file the server is to use; ``UsersError`` says why not.

        Refused: more than MAXFILE bytes, text that is not UTF-8, a bad line
        (``parse``), and a table that would not keep ``owner`` (the Unix user
        running the server) in charge (``check_owner``).
        """
        if len(data) > MAXFILE:
            raise UsersError(f"larger than {MAXFILE} bytes")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise UsersError(f"not UTF-8 text (byte {e.start})") from None
        users = cls.parse(text)
        users.check_owner(owner)
        return users

    def check_owner(self, owner: str) -> None:
        """Raise ``UsersError`` unless ``owner`` can attach as itself, reach the console
        (whose owner it is) and rewrite the users file under this table."""
        if not self._byname:
            raise UsersError("no users")
        u = self._byname.get(owner)
        if u is None:
            raise UsersError(f"no line for the server's owner {owner!r}")
        if not u.enabled:
            raise UsersError(f"the server's owner {owner!r} is disabled")
        if not self.canwrite(owner):
            raise UsersError(f"the server's owner {owner!r} is not in the write group")

    @classmethod
    def defaults(cls, owner: str) -> Users:
        """The table used while the tree has no users file (or one the server refused).

        ``owner`` (the Unix user running the server) gets a group of its own
        and leads ``adm``, the console's group; ``none`` is who unknown users
        become.  ``adm`` is disabled, a group only: nobody attaches as ``adm``.
        No Unix account (sys, bin, adm...) gains anything by its name: unknown
        names attach as ``none``.  No ``write`` group: everybody the
        permissions allow may write.
        """
        why = check_name(owner)
        if why:
            raise UsersError(f"server owner: {why}")
        users = [User("0", NONE)]
        if owner == ADM:
            users.append(User("1", ADM, ADM))
        else:
            users.append(User("1", ADM, owner, (owner,), enabled=False))
            if owner != NONE:
                users.append(User("2", owner, owner))
        return cls(users)

    def reload(self, text: str) -> None:
        """Replace the table by ``text`` parsed; on error raise and change nothing."""
        self.replace(Users.parse(text))

    def replace(self, new: Users) -> None:
        """Take ``new``'s users; allowed users stay allowed if still there and enabled."""
        self._byname = new._byname
        self.allowed = {a for a in self.allowed if self.enabled(a)}

    def format(self) -> str:
        """The canonical users file: one line per user, by uid then name."""
        return "".join(u.line() + "\n" for u in self._sorted())

    def _sorted(self) -> list[User]:
        return sorted(self._byname.values(), key=lambda u: (_uidkey(u.uid), u.name))

    # -- queries ----------------------------------------------------------

    def lookup(self, name: str) -> User | None:
        """The record for ``name`` (enabled or not), or None."""
        return self._byname.get(name)

    def names(self) -> list[str]:
        """Every name in the table, sorted."""
        return sorted(self._byname)

    def exists(self, name: str) -> bool:
        return name in self._byname

    def enabled(self, name: str) -> bool:
        """True if ``name`` is a user that may attach (exists, not disabled)."""
        u = self._byname.get(name)
        return u is not None and u.enabled

    def ismember(self, user: str, group: str) -> bool:
        """True if ``user`` is a member of ``group`` (see the module docstring)."""
        if not self.enabled(user):
            return False
        if user == group:
            return True
        g = self._byname.get(group)
        return g is not None and (user == g.leader or user in g.members)

    def isleader(self, user: str, group: str) -> bool:
        """True if ``user`` leads ``group``: its leader, or any member when it has none."""
        if not self.enabled(user):
            return False
        g = self._byname.get(group)
        if g is not None and g.leader:
            return user == g.leader
        return self.ismember(user, group)

    def groups(self, user: str) -> list[str]:
        """The groups whose line names ``user`` as leader or member, sorted.

        This is what the file says, whether or not ``user`` is enabled.
        """
        return sorted(g.name for g in self._byname.values()
                      if g.name != user and (user == g.leader or user in g.members))

    def canwrite(self, user: str) -> bool:
        """The write-group rule: with a ``write`` user present only its members may modify."""
        if user in self.allowed or WRITEGROUP not in self._byname:
            return True
        return self.ismember(user, WRITEGROUP)

    def access(self, user: str, owner: str, group: str, mode: int, want: int) -> bool:
        """May ``user`` do ``want`` (AREAD|AWRITE|AEXEC) on a file with these owner, group, mode?

        Plan 9 semantics: any class that applies and grants every wanted bit
        suffices: "other" always applies, "group" to its members, "owner" to
        the owner.  Read is enforced like the others.  Allowed users pass;
        ``none`` gets the "other" bits only (fossil's rule).
        """
        want &= 7
        if user in self.allowed or (mode & want) == want:
            return True
        if user == NONE or not self.enabled(user):
            return False
        if ((mode >> 3) & want) == want and self.ismember(user, group):
            return True
        return ((mode >> 6) & want) == want and user == owner

    # -- console ----------------------------------------------------------

    def allow(self, name: str) -> None:
        """Let ``name`` bypass permission checks (console ``allow NAME``)."""
        if not self.enabled(name):
            raise UsersError("user not found")
        self.allowed.add(name)

    def disallow(self, name: str | None = None) -> None:
        """Undo ``allow`` for ``name``, or for everybody when name is None."""
        if name is None:
            self.allowed.clear()
        elif not self.exists(name):
            raise UsersError("user not found")
        else:
            self.allowed.discard(name)

    def report_users(self) -> list[str]:
        """Console ``users``: one line per user, the users-file shape, ``!`` when disabled."""
        return [u.line() for u in self._sorted()]

    def report_allowed(self, name: str | None = None) -> list[str]:
        """Console ``allow``/``disallow`` listing.

        Every allowed user as ``user 'NAME' is allowed``, then, if ``name``
        is given and not allowed, ``user 'NAME' is not allowed``.
        """
        lines = [f"user '{a}' is allowed" for a in sorted(self.allowed)]
        if name is not None and name not in self.allowed:
            lines.append(f"user '{name}' is not allowed")
        return lines

    def report_uname(self, who: str) -> str:
        """Console ``uname WHO``: one line describing a user found by name, else by uid.

        Shape: ``uid U name N leader L members M groups G`` where M and G are
        comma-separated lists and ``-`` stands for an empty field; the words
        ``disabled`` and ``allowed`` are appended when they apply.
        """
        u = self._byname.get(who)
        if u is None:
            u = next((x for x in self._byname.values() if x.uid == who), None)
        if u is None:
            raise UsersError("user not found")
        groups = self.groups(u.name)
        words = [
            "uid", u.uid, "name", u.name, "leader", u.leader or "-",
            "members", ",".join(u.members) or "-", "groups", ",".join(groups) or "-",
        ]
        if not u.enabled:
            words.append("disabled")
        if u.name in self.allowed:
            words.append("allowed")
        return " ".join(words)

