"""Reading a trained student: convergence diagnostics, energy, and benchmarking helpers."""
