"""`python -m tlserve` is the `tlserve` command."""

import sys

from tlserve.cli import main

sys.exit(main())
