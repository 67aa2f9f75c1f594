"""The ``consumers`` command: one click group; each consumer adds its own subcommand.

Kept minimal on purpose: ``archive`` lives in ``consumers/archive/command.py`` and ``detect``
in ``consumers/detect/``; this module only assembles the group.
"""

from __future__ import annotations

import click


@click.group()
def main() -> None:
    """Long-running consumers of the hera-guard change topics."""


def _register() -> None:
    from consumers.archive.command import archive, history
    from consumers.detect.command import detect

    main.add_command(archive)
    main.add_command(history)
    main.add_command(detect)


_register()
