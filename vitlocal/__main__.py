import sys

from vitlocal.cli import main

sys.exit(main())
