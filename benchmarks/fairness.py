"""Fairness-aware trimming on UCI Adult and COMPAS: utility and demographic-parity influence, remove the 5%
most harmful (for utility, for fairness, for both), refit; test accuracy and DP gap before and after.

Usage: python benchmarks/fairness.py [--quick]
(the same numbers as: influent bench fairness-adult [--quick]; influent bench fairness-compas [--quick])
"""

import sys

import pandas as pd

from influent.evaluation.suites import print_table, run_suite

if __name__ == "__main__":
    quick = "--quick" in sys.argv[1:]
    parts = [run_suite(name, quick) for name in ("fairness-adult", "fairness-compas")]
    table = pd.concat(parts, ignore_index=True)
    table.attrs["notes"] = parts[0].attrs.get("notes", [])
    table.attrs["seconds"] = sum(p.attrs["seconds"] for p in parts)
    print_table("fairness", table)
