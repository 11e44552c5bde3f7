"""Addresses: Plan 9 dial strings and their Unix equivalents, and how to dial them.

Shared by the server (where to listen, whether that is beyond loopback) and
the client (where to connect).  Knows sockets and paths, never 9P.

Accepted forms (``parse``)::

    tcp!host!port     tcp!host        (net! is taken as tcp!; port may be 9fs or any number)
    tcp!*!port                        listen on every address
    unix!/path/to/socket
    host:port   [::1]:port   [::1]   *:port
    564                               a bare port number: TCP on 127.0.0.1
    /path/sock  ./sock  dir/sock      a leading '/' or './', or a '/' and no '!': a Unix socket
    name                              no '!', ':' or '/': a Unix socket posted as
                                      ``name`` in the plan9port namespace directory

The namespace directory follows plan9port's lib9 ``getns``:
``$NAMESPACE`` if set; else ``/tmp/ns.USER.DISPLAY`` where USER is the
password-file name of the real uid (plan9port's ``getuser``; ``none`` if
there is none, never ``$USER``), and DISPLAY is ``$DISPLAY`` (``:0`` when
unset) with a trailing screen number ``.0`` removed (``:0.0`` becomes
``:0``) and every ``/`` turned into ``_``.  ``ensure_namespace_dir`` creates
it with mode 0700 and refuses one we do not own or that others may write.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import pwd
import re
import socket
import stat
from typing import NamedTuple

__all__ = [
    "Address", "parse", "namespace_dir", "ensure_namespace_dir", "service_path",
    "is_loopback", "open_connection", "create_connection", "connect_socket", "getuser",
    "NINEP_PORT",
]

#: the 9P port, service name "9fs"
NINEP_PORT = 564

_SERVICES = {"9fs": NINEP_PORT}


class Address(NamedTuple):
    """A parsed address: ``kind`` is 'tcp' (host, port) or 'unix' (path)."""

    kind: str
    host: str = ""
    port: int = 0
    path: str = ""

    def dialstring(self) -> str:
        """The Plan 9 spelling: ``tcp!host!port`` or ``unix!path``."""
        if self.kind == "unix":
            return f"unix!{self.path}"
        return f"tcp!{self.host}!{self.port}"

    def listen_host(self) -> str | None:
        """The host to bind: None (every address) for '*', else the host."""
        return None if self.host == "*" else self.host

    def dial_host(self) -> str:
        """The host to connect to: '*' (a listening address) means this machine."""
        return "localhost" if self.host == "*" else self.host


def parse(addr: str, default_port: int = NINEP_PORT) -> Address:
    """Parse any accepted address form; raise ValueError saying what is wrong."""
    if not isinstance(addr, str):
        raise ValueError(f"address must be a string, not {type(addr).__name__}")
    if not addr or addr != addr.strip() or any(c.isspace() or ord(c) < 32 for c in addr):
        raise ValueError(f"bad address {addr!r}: empty or contains blanks or control characters")
    if addr.startswith(("/", "./", "../")):
        return Address("unix", path=addr)
    if "!" in addr:
        return _parse_dialstring(addr, default_port)
    if "/" in addr:
        return Address("unix", path=addr)
    if addr.isdigit():
        return Address("tcp", "127.0.0.1", _port(addr, addr))
    if ":" in addr:
        return _parse_hostport(addr, default_port)
    return Address("unix", path=service_path(addr))


def _parse_dialstring(addr: str, default_port: int) -> Address:
    net, _, rest = addr.partition("!")
    if net == "unix":
        if not rest:
            raise ValueError(f"bad address {addr!r}: unix! needs a socket path")
        return Address("unix", path=rest)
    if net not in ("tcp", "net"):
        raise ValueError(f"bad address {addr!r}: network {net!r} not supported (tcp or unix)")
    parts = rest.split("!")
    if len(parts) > 2:
        raise ValueError(f"bad address {addr!r}: want tcp!host!port")
    host = _host(parts[0], addr)
    port = _port(parts[1], addr) if len(parts) == 2 else default_port
    return Address("tcp", host, port)


def _parse_hostport(addr: str, default_port: int) -> Address:
    if addr.startswith("["):
        m = re.fullmatch(r"\[([^\]]+)\](?::(.*))?", addr)
        if not m:
            raise ValueError(f"bad address {addr!r}: want [ipv6]:port")
        host, port = m.group(1), m.group(2)
        if port is None:
            return Address("tcp", _host(host, addr), default_port)
        return Address("tcp", _host(host, addr), _port(port, addr))
    if addr.count(":") > 1:  # a bare IPv6 address, no port
        return Address("tcp", _host(addr, addr), default_port)
    host, _, port = addr.partition(":")
    if not host:
        raise ValueError(f"bad address {addr!r}: empty host (write *:port to listen everywhere)")
    return Address("tcp", _host(host, addr), _port(port, addr))


def _host(host: str, addr: str) -> str:
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host:
        raise ValueError(f"bad address {addr!r}: empty host")
    if host == "*":
        return host
    if ":" in host:
        try:
            ipaddress.IPv6Address(host.split("%", 1)[0])
        except ValueError:
            raise ValueError(f"bad address {addr!r}: {host!r} is not an IPv6 address") from None
        return host
    if not re.fullmatch(r"[A-Za-z0-9._-]+", host):
        raise ValueError(f"bad address {addr!r}: bad host name {host!r}")
    return host


def _port(port: str, addr: str) -> int:
    if port in _SERVICES:
        return _SERVICES[port]
    if port.isascii() and port.isdigit():
        n = int(port)
        if n <= 65535:
            return n
        raise ValueError(f"bad address {addr!r}: port {n} out of range")
    if re.fullmatch(r"[A-Za-z][A-Za-z0-9-]*", port):
        try:
            return socket.getservbyname(port, "tcp")
        except OSError:
            pass
    raise ValueError(f"bad address {addr!r}: unknown port {port!r}")


# -- the plan9port name space -------------------------------------------------

def getuser() -> str:
    """The Unix user running us, plan9port's way: the password-file name of the real uid."""
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return "none"


def namespace_dir() -> str:
    """The plan9port name space directory (see the module docstring); not created."""
    ns = os.environ.get("NAMESPACE")
    if ns:
        return ns
    display = os.environ.get("DISPLAY") or ":0"
    colon = display.rfind(":")
    if colon >= 0:
        m = re.match(r"\d*", display[colon + 1:])
        screen = display[colon + 1 + m.end():]
        if screen == ".0":
            display = display[:colon + 1 + m.end()]
    display = display.replace("/", "_")
    return f"/tmp/ns.{getuser()}.{display}"


def ensure_namespace_dir() -> str:
    """Create the name space directory (mode 0700) if missing; return it.

    Raise PermissionError if it is not a directory we own, or if group or
    others may write it: a socket posted there would be theirs to replace.
    """
    ns = namespace_dir()
    try:
        os.mkdir(ns, 0o700)
    except FileExistsError:
        pass
    # a name we derived in /tmp is not followed if it is a symbolic link someone planted;
    # a $NAMESPACE the user chose is
    st = os.stat(ns) if os.environ.get("NAMESPACE") else os.lstat(ns)
    if not stat.S_ISDIR(st.st_mode):
        raise PermissionError(f"name space {ns}: not a directory")
    if st.st_uid != os.geteuid():
        raise PermissionError(f"name space {ns}: owned by uid {st.st_uid}, not by us")
    if st.st_mode & 0o022:
        raise PermissionError(
            f"name space {ns}: mode {stat.S_IMODE(st.st_mode):04o} lets others write it")
    return ns


def service_path(name: str) -> str:
    """Where a service called ``name`` is posted: a socket in the name space directory."""
    return os.path.join(namespace_dir(), name)


# -- policy -------------------------------------------------------------------

def is_loopback(address: Address | str) -> bool:
    """True if only this machine can reach ``address``.

    Unix sockets and TCP on 127.0.0.0/8, ::1 or ``localhost`` are loopback;
    '*', '0.0.0.0', '::' and every other host (names are not resolved: DNS
    may say anything) are not.
    """
    if isinstance(address, str):
        address = parse(address)
    if address.kind == "unix":
        return True
    host = address.host
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


# -- dialling -----------------------------------------------------------------

async def open_connection(addr: Address | str, **kwargs):
    """Dial ``addr``; return asyncio's (reader, writer).  kwargs go to asyncio."""
    a = parse(addr) if isinstance(addr, str) else addr
    if a.kind == "unix":
        return await asyncio.open_unix_connection(a.path, **kwargs)
    return await asyncio.open_connection(a.dial_host(), a.port, **kwargs)


async def create_connection(addr: Address | str, protocol_factory, **kwargs):
    """Dial ``addr`` with an asyncio protocol; return (transport, protocol)."""
    a = parse(addr) if isinstance(addr, str) else addr
    loop = asyncio.get_running_loop()
    if a.kind == "unix":
        return await loop.create_unix_connection(protocol_factory, a.path, **kwargs)
    return await loop.create_connection(protocol_factory, a.dial_host(), a.port, **kwargs)


def connect_socket(addr: Address | str, timeout: float | None = None) -> socket.socket:
    """Dial ``addr``; return a connected blocking socket."""
    a = parse(addr) if isinstance(addr, str) else addr
    if a.kind == "unix":
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.settimeout(timeout)
            s.connect(a.path)
        except BaseException:
            s.close()
            raise
        return s
    s = socket.create_connection((a.dial_host(), a.port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s
