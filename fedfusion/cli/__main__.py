"""``python -m fedfusion.cli``: the ``fedfusion`` command."""

import sys

from fedfusion.cli import main

sys.exit(main())
