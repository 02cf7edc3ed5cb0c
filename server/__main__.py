"""`python -m server`: the embedded tritonserver (server.launcher.embedded)."""

import sys

from server.launcher.embedded import main

sys.exit(main())
