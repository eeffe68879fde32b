"""Serve each device's previous model again: pyinfra inventory.py rollback.py"""

from tasks.rollback import rollback

rollback()
