"""The one exception type the CLI and the app turn into a one-line message for the user."""


class DraftScopeError(Exception):
    """A user-facing error: bad input, an unknown model, an incompatible pairing, a limit exceeded."""
