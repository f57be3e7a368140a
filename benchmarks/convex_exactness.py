"""Exactness on convex models: IF (exact) vs leave-one-out retraining, and every curvature solver vs the exact one.

Usage: python benchmarks/convex_exactness.py [--quick]   (the same as: influent bench convex-exactness [--quick])
"""

import sys

from influent.evaluation.suites import print_table, run_suite

if __name__ == "__main__":
    print_table("convex-exactness", run_suite("convex-exactness", quick="--quick" in sys.argv[1:]))
