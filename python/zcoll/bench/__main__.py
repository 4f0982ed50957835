"""python -m zcoll.bench: the zcoll-bench command."""
import sys

from . import main

sys.exit(main())
