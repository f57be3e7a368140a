"""Evaluation: how good are scores? Leave-one-out correlation, LDS, mislabel detection, removal
curves, brittleness, and the experiments that reproduce the papers' tables. Import submodules."""
