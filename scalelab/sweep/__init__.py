"""Sweeps: many runs from one declaration, the table they make, and the laws fitted to it.

points (expansion, the keep window), runner (subprocesses, K at a time), results
(results.csv and fits), checks (what a fit cannot promise), lr_laws (learning-rate optima
and sensitivity), compute_optimal (Chinchilla's three approaches), compare (compute
multipliers), verify (predict, then verify), plots, cli (`python -m scalelab.sweep`).
"""
