"""The science that needs no training: counting and fitting.

flops (parameter and FLOP conventions, device peaks), scaling (power-law and Chinchilla
fits, bootstrap), isoflop (Chinchilla Approach 2), envelope (Approach 1), shapes (model
shapes for a parameter budget). Sweeps, which train, are the floor above: scalelab/sweep/.
"""
