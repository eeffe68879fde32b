"""Serve each device's previous model again: pyinfra inventory.py rollback.py"""

from tasks.rollback import rollback
from tasks.summary import print_summary_at_exit

print_summary_at_exit()
rollback()
