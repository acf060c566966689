"""`python -m slotwatch VERB`: the same command line as the `slotwatch` script."""

import sys

from slotwatch.cli import main

sys.exit(main())
