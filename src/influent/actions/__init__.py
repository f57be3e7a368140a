"""Actions on scores: trim, relabel, reweight, coreset, active learning. Import submodules."""
