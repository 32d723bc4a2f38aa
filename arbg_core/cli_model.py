"""`arbg train | sample | evaluate | bench`: the model-side commands of the CLI."""

from __future__ import annotations


def add_commands(sub, usage_error):
    """Register the model-side subcommands on the `arbg` parser."""
