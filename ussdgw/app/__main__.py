"""`python -m ussdgw.app ...` is the `ussdgw` command."""

import sys

from ussdgw.app.cli import main

sys.exit(main())
