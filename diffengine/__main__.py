"""``python -m diffengine`` is the ``diffengine`` command."""
from .entry_point import cli

cli()
