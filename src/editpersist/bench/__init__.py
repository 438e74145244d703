"""Benchmarks and the grid's cost model, outside the core: `python -m editpersist.bench <what>`
(runs.py), the GPU-hour and disk model of a grid (costs.py), and real models' shapes with random
weights (reference_shapes.py). Nothing in the library imports this package."""
