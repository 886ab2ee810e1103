"""`python -m apps.cli`: the `emoverse` command."""

import sys

from apps.cli.main import main

sys.exit(main())
