"""The `lit-garbage` command (`main.py`) and one module per subcommand: argument parsing and exit codes only.

The work itself is done by the stage packages (training, export, evaluation, serve); `scripts/*.py` are
thin aliases of the subcommands.
"""
