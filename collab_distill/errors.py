"""The one base class of the errors a user can fix: a bad file, key, value or folder.

Every tool catches :class:`UserError`, prints its one-line message (which names the file, key or
record, what is wrong and what to do) and exits with code 2; ``--debug`` shows the traceback instead.
Anything else is a bug and keeps its traceback.
"""
from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input or outputs, described in one line; tools exit 2 on it."""

    label = "error"                      # the prefix a tool prints before the message
