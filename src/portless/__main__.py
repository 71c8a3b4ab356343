import sys

from portless.cli import main

sys.exit(main())
