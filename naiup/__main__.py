import sys

from naiup.cli.main import main

sys.exit(main())
