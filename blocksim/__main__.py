"""``python -m blocksim``: the same command line as ``blocksim``."""

from .cli.commands import main

if __name__ == "__main__":
    main(prog_name="blocksim")
