import sys

from naiup.cli import main

sys.exit(main())
