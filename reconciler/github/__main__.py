"""``python -m reconciler.github``: see ``reconciler.github._cli``."""

import sys

from reconciler.github._cli import main

sys.exit(main())
