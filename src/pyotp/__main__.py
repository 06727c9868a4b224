"""``python -m pyotp``: the command line (subcommands in ``pyotp.cli``).

>>> python -m pyotp run examples.my_app.application:MyApp --config examples/my_app/config/config.toml
"""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
