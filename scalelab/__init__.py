"""scalelab: sharded training runs, parameter sweeps and scaling-law fits in JAX/Flax."""
