"""`python -m tlserve` is the `tlserve` command."""

import sys

from tlserve.cli import main

if __name__ == "__main__":
    sys.exit(main())
