"""Relabelling noisy digits by the lowest-valued samples of each method (oracle, IF, IP, Self-IF, random).

Usage: python benchmarks/relabel_digits.py [--quick]   (the same as: influent bench relabel-digits [--quick])
"""

import sys

from influent.evaluation.suites import print_table, run_suite

if __name__ == "__main__":
    print_table("relabel-digits", run_suite("relabel-digits", quick="--quick" in sys.argv[1:]))
