import sys

from hw_picollector.cli import main

sys.exit(main())
