from .runs import main

main()
