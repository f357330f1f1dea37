"""Errors that reach the user as one line naming the input and the fix."""


class MeapDataError(Exception):
    """A user-facing error: the CLI prints ``error: <message>`` and exits 2."""


class DatasetIncompleteError(MeapDataError):
    """A dataset directory without a manifest: still being written, or a crashed run."""


class ChecksumError(MeapDataError):
    """A shard whose bytes do not match the manifest's sha256."""
