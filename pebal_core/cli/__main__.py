"""``python -m pebal_core.cli``: the ``pebal`` command (also how ``torchrun -m pebal_core.cli train`` starts it)."""

import sys

from pebal_core.cli import main

sys.exit(main())
