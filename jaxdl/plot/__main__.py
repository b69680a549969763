"""`python -m jaxdl.plot WORKDIR [WORKDIR ...] [--out=FILE]`: see jaxdl.plot. (A __main__ module of its own, so
that running it does not re-import the jaxdl.plot that importing jaxdl already loaded.)"""

import sys

from jaxdl.plot import main

sys.exit(main())
