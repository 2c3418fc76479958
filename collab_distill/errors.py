"""The one base class of the errors a user can fix: a bad file, key, value or folder.

Every tool catches :class:`UserError` (through :func:`collab_distill.cli.user_errors`), prints
``error: <its one-line message>`` (which names the file, key or record, what is wrong and what to do)
and exits with code 2; ``--debug`` shows the traceback instead.
Anything else is a bug and keeps its traceback.
"""
from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input or outputs, described in one line; tools exit 2 on it."""

    def __init__(self, *args: object) -> None:
        super().__init__(*args)
        wrapped = args[0] if len(args) == 1 and isinstance(args[0], str) else ""
        if wrapped.startswith("Caught ") and "\nOriginal Traceback" in wrapped:
            # torch re-raises a DataLoader worker's exception as ``type(its message + the worker's
            # traceback)``: keep the one line (after "module.Class: ") and the rest as a note for --debug
            self.args = (wrapped.rstrip().rsplit("\n", 1)[-1].split(": ", 1)[-1],)
            if hasattr(self, "add_note"):  # Python >= 3.11
                self.add_note(wrapped)


class ConfigError(UserError, ValueError):
    """A configuration problem; its message is one line naming the key and the file.

    Defined here (not in :mod:`collab_distill.config`, which re-exports it) so that the light modules the
    config loader imports, such as the method registry, can raise it without an import cycle."""
