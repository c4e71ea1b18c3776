"""``python -m harness``."""

from harness.cli import main_exit

main_exit()
