"""`python -m castai_focus_dagster.castai.sandbox`: the `castai-focus-sandbox` command."""

import sys

from castai_focus_dagster.castai.sandbox.cli import main

sys.exit(main())
