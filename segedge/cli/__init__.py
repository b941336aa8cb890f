"""The command line: parsing only. ``main.py`` builds the parser, ``args.py`` holds the shared flag groups,
and each other module is the command of the same name. Nothing outside this package imports it."""
