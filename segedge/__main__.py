"""``python -m segedge``: the same as the ``segedge`` command."""

import sys

from segedge.cli.main import main

sys.exit(main())
