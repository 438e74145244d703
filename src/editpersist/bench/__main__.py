import sys

# `coverage` is a statistics simulation with options of its own (coverage.py); every other
# benchmark is runs.py's.
if sys.argv[1:2] == ["coverage"]:
    from .coverage import main
else:
    from .runs import main

main()
