import sys

from minimix.cli import main

sys.exit(main())
