"""Command implementations behind the ``diffengine`` CLI."""
