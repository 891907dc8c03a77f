import sys

from eqspike.app.cli import main

sys.exit(main())
