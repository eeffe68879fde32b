"""What a llama-docker run sets up before pyinfra connects, from the config.py pyinfra reads
first: host keys checked strictly unless the inventory's data says otherwise (trust.py), and
the end-of-run summary, which then also names the hosts pyinfra could not reach.

In a folder of your own, with the packaged deploy, a config.py of two lines does it:

    from llama_docker.tasks.before_connect import setup
    setup()
"""

from __future__ import annotations

from .summary import print_summary_at_exit
from .trust import strict_by_default


def setup() -> None:
    """Strict host keys by default and the summary; safe to call more than once."""
    strict_by_default()
    print_summary_at_exit()
