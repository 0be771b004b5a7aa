from trtforge.cli import main

try:
    main()
finally:
    # CPython flags a KeyboardInterrupt that leaves code exec() ran from a string (a dataclass's or
    # a namedtuple's methods being made when Ctrl-C lands) as unhandled, even where trtforge then
    # handles it and exits 130; under ``python -m`` the interpreter then kills itself with SIGINT as
    # it exits. The next string exec() clears the flag: the exit code is trtforge's own
    exec("")
