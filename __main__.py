"""``python -m crosslocate``."""

import sys

from crosslocate.pipelines.cli import main

sys.exit(main())
