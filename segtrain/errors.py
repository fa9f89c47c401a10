"""The one exception type for user mistakes (bad config, missing file, wrong labels).

The CLI prints its message on one line and exits non-zero; anything else is a bug
and keeps its traceback.
"""


class SegtrainError(Exception):
    """A user-facing error whose message names the file or config key and the fix."""
