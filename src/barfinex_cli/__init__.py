"""barfinex-cli: a small trading operating system for the terminal.

Importing the package does no work and pulls in nothing heavy, so that `bfx --help` stays fast.
"""

__version__ = "0.1.0"
