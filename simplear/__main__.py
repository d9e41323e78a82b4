import sys

from simplear.cli import main

sys.exit(main())
