import sys

from bootstrap_server.server import main

sys.exit(main())
