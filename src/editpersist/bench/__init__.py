"""Benchmarks and the grid's cost model, outside the core: `python -m editpersist.bench <what>`
(runs.py), the GPU-hour and disk model of a grid (costs.py), and real models' shapes with random
weights (reference_shapes.py). Nothing in the library imports this package."""


def main(argv: list[str] | None = None) -> None:
    """`<what> [options]`: one benchmark. `coverage` (a statistics simulation) and
    `toy-finetunes` (the toy fine-tune settings' search) have options of their own; every other
    benchmark is runs.py's."""
    import sys

    args = sys.argv[1:] if argv is None else list(argv)
    if args[:1] == ["coverage"]:
        from .coverage import main as run
    elif args[:1] == ["toy-finetunes"]:
        from .toy_finetunes import main as run

        args = args[1:]
    else:
        from .runs import main as run
    run(args)
