"""Noisy-label detection and trimming on scikit-learn digits and the MNIST subset: every detector of the
Hessian-free and outlier-gradient families against label-quality baselines and random trimming.

Usage: python benchmarks/noisy_labels.py [--quick]   (the same as: influent bench noisy-labels [--quick])
"""

import sys

from influent.evaluation.suites import print_table, run_suite

if __name__ == "__main__":
    print_table("noisy-labels", run_suite("noisy-labels", quick="--quick" in sys.argv[1:]))
