"""docs/ stays true to the code: the format page is the encoding modules' own text."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_format_page_matches_the_modules_that_encode_the_format():
    out = subprocess.run([sys.executable, os.path.join(ROOT, "docs", "genformat.py")],
                         capture_output=True, text=True, check=True).stdout
    with open(os.path.join(ROOT, "docs", "format.md")) as fp:
        assert fp.read() == out, "regenerate: python docs/genformat.py > docs/format.md"
