"""``python -m refvit.audit [--json PATH] [--no-progress]``."""
import sys

from . import main

sys.exit(main())
