"""`python -m lamp_bench.harness.sweep SWEEP OUT KEY`: run one step of a sweep in this process (the local
executor's child process). A module of its own, because `-m` on step_runs itself would import it twice
(the package's __init__ imports it first)."""
import sys

from lamp_bench.harness.sweep.step_runs import main

sys.exit(main(sys.argv[1:]))
