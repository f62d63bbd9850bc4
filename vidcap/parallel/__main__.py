"""`python -m vidcap.parallel RUN SHARD... --outcomes FILE`: one rank started by vidcap's local launcher."""

import sys

from vidcap.parallel.ranks import run_rank_main

sys.exit(run_rank_main())
