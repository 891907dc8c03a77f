"""Baselines trained in the same harness as eqspike, for comparison."""
