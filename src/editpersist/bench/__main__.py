import sys

# `coverage` (a statistics simulation) and `toy-finetunes` (the toy fine-tune settings' search)
# have options of their own; every other benchmark is runs.py's.
if sys.argv[1:2] == ["coverage"]:
    from .coverage import main
elif sys.argv[1:2] == ["toy-finetunes"]:
    from .toy_finetunes import main
else:
    from .runs import main

main()
