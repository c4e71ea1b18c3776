"""``python -m harness``."""

from harness.commands.cli import main_exit

main_exit()
