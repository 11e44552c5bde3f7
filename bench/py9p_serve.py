"""py9p's own server (from the PyPI package p9fs) serving a local directory, for bench.py.

    python bench/py9p_serve.py ROOT MSIZE

Listens on 127.0.0.1, port 0, and prints the port on the first line of stdout.  This is what
`python -m py9p -w -a 127.0.0.1 -p PORT -r ROOT` runs (py9p.__main__: a py9p.Server with the
LocalFs of py9p.__main__ mounted, creation allowed), except that the port is chosen by the
kernel and msize is ours to give: py9p's command line always offers 8192.
"""

import sys

from py9p import py9p
from py9p.__main__ import LocalFs


class Server(py9p.Server):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.port = self.sock.getsockname()[1]


def main():
    root, msize = sys.argv[1], int(sys.argv[2])
    srv = Server(listen=("127.0.0.1", 0), msize=msize)
    srv.mount(LocalFs(root, 1, 0))
    print(srv.port, flush=True)
    srv.serve()


if __name__ == "__main__":
    main()
