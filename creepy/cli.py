"""The creepy command: one program, a subcommand per creepy(4) program and tool."""

import sys

USAGE = """usage: creepy command [args]

commands:
  fmt [-wy] [-s size] [-b bsize] disk     format a main disk, or a WORM with -w
  9pix [-ra] [-c MiB] [-A addr] [-S srv] [disk]
                                          serve a main disk over 9P2000
  rip [-a] [-c MiB] [-A addr] [-S srv] disk
                                          serve a WORM disk
  check [-v] disk                         verify a disk (read-only; the disk may be in use)
  history [-a addr] [-t tree] path        list the archived versions of a file
  yesterday [-a addr] [-t tree] [-n days | -d yyyymmdd] [-r] path
                                          print (or restore) a file's archived path for a day
  arch                                    the archiver, started by 9pix (never by hand)
  con [-u user] [-s srv] [-c cmd]... [addr]
                                          the console of a running 9pix or rip
  9p [-a addr | -s srv] [-A aname] [-u user] cmd args...
                                          plan9port's 9p: ls, read, write, stat, put, get...
  mount [-f] [-o opts] [-A aname] [-u user] addr mountpoint
                                          mount a 9P tree with FUSE
"""


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE, end="")
        return 0 if argv else 2
    cmd, rest = argv[0], argv[1:]
    if cmd == "fmt":
        from creepy.fmt import main as run
    elif cmd == "9pix":
        from creepy.ninepix import main as run
    elif cmd == "rip":
        from creepy.rip import main as run
    elif cmd == "check":
        from creepy.check import main as run
    elif cmd == "arch":
        from creepy.arch import main as run
    elif cmd == "history":
        from creepy.history import main_history as run
    elif cmd == "yesterday":
        from creepy.history import main_yesterday as run
    elif cmd == "con":
        from creepy.con import main as run
    elif cmd == "9p":
        from creepy.p9 import main as run
    elif cmd == "mount":
        from creepy.mount import main as run
    else:
        print(f"creepy: unknown command {cmd!r}\n{USAGE}", end="", file=sys.stderr)
        return 2
    return run(rest) or 0


if __name__ == "__main__":
    sys.exit(main())
