"""creepy con: the console of a running 9pix or rip, for people and for scripts.

    creepy con [-u user] [-s srv] [-c command]... [addr]

Plan 9's con(1) to a file server's console, after `con -l /srv/fscons`: attach `main`, open
/cons for reading and writing, send command lines, print what the console answers.  With no
address it dials the posted `9pix` (or the service named by -s) in the plan9port name space
directory, like plan9port's `9p -s`.

Commands come from the -c options, in order; else from standard input: interactively, with a
prompt, line editing and history (the standard library's readline, where present), when
standard input is a terminal; one command a line otherwise.  Blank lines and `#` comments are
skipped, as the console itself skips them.

The console answers a failed command with one of three shapes (docs/console.md):

    'cmd'?              no such command
    usage: ...          wrong arguments
    cmd: why            the command ran and failed

A script (-c or standard input that is not a terminal) stops at the first command answered
so and exits 1; so does a lost connection (except after `halt`, which is how halt ends).
Interactively every command runs and the exit status is 0.  Output of other console users
and messages of the server itself arrive between commands: interactively they are printed as
they come; a script prints only the answers to its own commands.

This module speaks 9P through creepy.ninep.client and knows nothing of the server's insides.
"""

import argparse
import os
import sys
import threading

from creepy.ninep import dial
from creepy.ninep.client import PROMPT, Error9P, SyncClient
from creepy.ninep.codec import ORDWR

#: the service `creepy 9pix` posts when run without -A or -S
DEFAULT_SERVICE = "9pix"
#: lines of interactive history kept between runs
HISTORY_LINES = 1000


class ConError(Exception):
    """A failure to tell the user in one line (no traceback)."""


def normalize(line):
    """A command line as the console echoes it: without its comment, stripped ('' to skip)."""
    return line.split("#", 1)[0].strip()


def failed(command, reply):
    """Whether the console's ``reply`` to ``command`` reports an error (the three shapes of
    the module docstring)."""
    first = reply.split("\n", 1)[0]
    word = command.split()[0]
    return (first == f"'{word}'?" or first.startswith("usage: ")
            or first.startswith(f"{word}: "))


def find_reply(text, line):
    """(reply, end) for the command ``line`` in console output ``text``, or None if its
    answer is not complete yet.

    The console echoes the line, prints its answer and then the prompt; the reply is what lies
    between the first echo and the first prompt after it, and ``end`` indexes the text just
    past that prompt.
    """
    echo = line + "\n"
    at = text.find(echo)
    if at < 0:
        return None
    start = at + len(echo)
    stop = text.find(PROMPT, start)
    if stop < 0:
        return None
    return text[start:stop], stop + len(PROMPT)


class Console:
    """/cons held open on one connection: ``run`` sends a line and returns the answer.

    A reader thread reads /cons for as long as the connection lasts and keeps what it read;
    ``on_unsolicited`` (if set) is called with text that arrives while no command of ours
    waits for an answer.
    """

    def __init__(self, addr, uname=None):
        try:
            self.client = SyncClient(addr, aname="main", uname=uname)
        except (OSError, ConnectionError, Error9P, ValueError) as e:
            raise ConError(f"cannot attach main on {describe(addr)}: {e}") from None
        try:
            self.fid = self.client.walkpath("cons")
            self.client.open(self.fid, ORDWR)
        except (Error9P, ConnectionError) as e:
            self.client.close()
            raise ConError(f"cannot open cons on {describe(addr)}: {e}") from None
        self.text = ""          # everything read from /cons not yet handed out
        self.lost = None        # why the connection ended, once it has
        self.busy = False       # a command of ours waits for its answer
        self.on_unsolicited = None
        self.cond = threading.Condition()
        self.reader = threading.Thread(target=self._read, name="cons-reader", daemon=True)
        self.reader.start()

    def _read(self):
        unit = self.client.iounit(self.fid)
        while True:
            try:
                data = self.client.read(self.fid, 0, unit)
            except (Error9P, ConnectionError, RuntimeError) as e:
                why = str(e) or "connection closed"
                data = b""
            else:
                why = "end of file on cons"
            with self.cond:
                if not data:
                    self.lost = why
                    self.cond.notify_all()
                    return
                self.text += data.decode("utf-8", "replace")
                if not self.busy and self.on_unsolicited is not None:
                    out = self._take_unsolicited()
                    if out:
                        self.on_unsolicited(out)
                self.cond.notify_all()

    def _take_unsolicited(self):
        out = self.text.replace(PROMPT, "")
        self.text = ""
        return out

    def run(self, line):
        """Send one command line (already normalized) and wait for the console's answer.

        Returns (reply, ok).  Raises ConError if the connection ends first, except for
        `halt`, whose answer is whatever arrived before the server went away.
        Raises KeyboardInterrupt if interrupted while waiting (the command runs on).
        """
        with self.cond:
            if self.lost is not None:
                raise ConError(f"console closed: {self.lost}")
            if self.on_unsolicited is not None:
                pending = self._take_unsolicited()
                if pending:
                    self.on_unsolicited(pending)
            else:
                self.text = ""
            self.busy = True
        halt = line.split()[0] == "halt"     # its answer may be the connection closing
        try:
            try:
                self.client.write(self.fid, 0, (line + "\n").encode())
            except ConnectionError as e:
                if not halt:
                    raise ConError(f"writing to cons: {e}") from None
            except Error9P as e:
                raise ConError(f"writing to cons: {e}") from None
            with self.cond:
                while True:
                    found = find_reply(self.text, line)
                    if found is not None:
                        reply, end = found
                        self.text = self.text[end:]
                        return reply, not failed(line, reply)
                    if self.lost is not None:
                        if halt:
                            reply = self.text.split(line + "\n", 1)[-1].replace(PROMPT, "")
                            self.text = ""
                            return reply, True
                        raise ConError(f"connection lost before the answer to {line!r}: "
                                       f"{self.lost}")
                    self.cond.wait()
        finally:
            with self.cond:
                self.busy = False

    def close(self):
        self.client.close()


def describe(addr):
    try:
        return dial.parse(addr).dialstring()
    except ValueError:
        return addr


def address(args):
    """The address to dial: the positional address, else the posted -s service (9pix)."""
    if args.addr and args.s:
        raise ConError("give an address or -s srv, not both")
    if args.addr:
        dial.parse(args.addr)   # a bad address is a one-line error here, not in the dialer
        return args.addr
    return f"unix!{dial.service_path(args.s or DEFAULT_SERVICE)}"


def run_script(con, lines, out):
    """Run lines in order; stop at the first failure.  Returns the exit status."""
    for raw in lines:
        line = normalize(raw)
        if not line:
            continue
        reply, ok = con.run(line)
        out.write(reply)
        out.flush()
        if not ok:
            return 1
    return 0


def history_path():
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local",
                                                            "state")
    return os.path.join(base, "creepy", "con_history")


def interactive(con, out):
    """Prompt, read, run, print, until end of input.  Returns 0."""
    try:
        import readline
    except ImportError:     # line editing is a comfort, not a need
        readline = None
    hist = history_path()
    if readline is not None:
        try:
            readline.read_history_file(hist)
        except OSError:
            pass
        readline.set_history_length(HISTORY_LINES)
    lock = threading.Lock()

    def unsolicited(text):
        with lock:
            buffer = readline.get_line_buffer() if readline is not None else ""
            out.write("\r\x1b[K" + text + PROMPT + buffer)
            out.flush()

    con.on_unsolicited = unsolicited
    try:
        while True:
            try:
                raw = input(PROMPT)
            except EOFError:
                out.write("\n")
                return 0
            except KeyboardInterrupt:
                out.write("\n")
                continue
            line = normalize(raw)
            if not line:
                continue
            try:
                reply, _ = con.run(line)
            except KeyboardInterrupt:
                out.write("\n(interrupted; the command goes on in the server)\n")
                continue
            with lock:
                out.write(reply)
                out.flush()
            if con.lost is not None:
                out.write(f"console closed: {con.lost}\n")
                return 0
    finally:
        if readline is not None:
            try:
                os.makedirs(os.path.dirname(hist), exist_ok=True)
                readline.write_history_file(hist)
            except OSError:
                pass


def main(argv=None):
    ap = argparse.ArgumentParser(
        prog="creepy con",
        description="Talk to the console (/cons) of a running creepy 9pix or rip.")
    ap.add_argument("-c", action="append", metavar="command", default=[],
                    help="run this command (repeatable) instead of reading standard input")
    ap.add_argument("-s", metavar="srv",
                    help=f"the posted service to dial (default {DEFAULT_SERVICE})")
    ap.add_argument("-u", metavar="user", help="attach as this user (default: who runs us)")
    ap.add_argument("addr", nargs="?",
                    help="a dial string: tcp!host!port, host:port, unix!/path, or a posted name")
    args = ap.parse_args(argv)
    out = sys.stdout
    try:
        con = Console(address(args), args.u)
    except (ConError, ValueError) as e:
        print(f"creepy con: {e}", file=sys.stderr)
        return 1
    try:
        if args.c:
            return run_script(con, args.c, out)
        if sys.stdin.isatty():
            return interactive(con, out)
        return run_script(con, sys.stdin, out)
    except ConError as e:
        out.flush()
        print(f"creepy con: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as e:      # a bug of ours: one line, not a traceback
        print(f"creepy con: internal error: {e!r}", file=sys.stderr)
        return 1
    finally:
        try:
            con.close()
        except Exception:       # the connection is gone already; nothing to tell
            pass
