"""``python -m vlm_collate.cli``: the ``vlm-collate`` command."""

import sys

from .commands import main

sys.exit(main())
