"""Print docs/format.md from the docstrings of the modules that encode the disk format."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import creepy.store.format as f  # noqa: E402
import creepy.store.log as log  # noqa: E402
import creepy.store.sweep as sweep  # noqa: E402

SECTIONS = [
    ("Blocks, entries, superblock (format.py)", f.__doc__),
    ("Superblock fields", f.encode_super.__doc__),
    ("Allocation and commit order (log.py)", log.__doc__),
    ("Mark and sweep (sweep.py)", sweep.__doc__),
]


def main():
    print("# The disk format (version 1)\n")
    print("This page is generated from the docstrings of the modules that encode the format, "
          "so it\ncannot drift from the code: `creepy/store/format.py` (blocks, entries, "
          "superblock),\n`creepy/store/log.py` (allocation and commit order) and "
          "`creepy/store/sweep.py` (marks).\nRegenerate it with "
          "`python docs/genformat.py > docs/format.md`.\n")
    for title, text in SECTIONS:
        print(f"## {title}\n\n```\n{text.strip()}\n```\n")


if __name__ == "__main__":
    main()
