"""[IP] Table 2 at CPU scale: evasion attack on 5-25% of UCI Adult test points, defended by trimming, relabelling or reweighting 5% of the training set by robustness influence.

Usage: python benchmarks/defense.py [--quick]   (the same as: influent bench defense [--quick])
"""

import sys

from influent.evaluation.suites import print_table, run_suite

if __name__ == "__main__":
    print_table("defense", run_suite("defense", quick="--quick" in sys.argv[1:]))
