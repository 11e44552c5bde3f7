import sys

from creepy.cli import main

sys.exit(main())
