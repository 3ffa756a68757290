"""``python -m host.conformance [options] -- COMMAND [ARGS]``: ``ilp-host conformance``."""

import sys

from host.conformance.cli import main

if __name__ == "__main__":
    sys.exit(main())
