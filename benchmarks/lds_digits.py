"""Linear datamodeling score (LDS) of each method for logistic regression on scikit-learn digits.

Usage: python benchmarks/lds_digits.py [--quick]   (the same as: influent bench lds-digits [--quick])
"""

import sys

from influent.evaluation.suites import print_table, run_suite

if __name__ == "__main__":
    print_table("lds-digits", run_suite("lds-digits", quick="--quick" in sys.argv[1:]))
