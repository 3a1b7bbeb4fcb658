"""The `bfx` command line: one module per command group, thin — parse, call, render."""
