"""``python -m serving``: the predictor and transformer containers' entry point (see
:mod:`serving.runtime.entrypoint`)."""

import sys

from serving.runtime.entrypoint import main

sys.exit(main())
