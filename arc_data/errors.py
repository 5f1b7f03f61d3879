"""Errors that the CLI turns into one line each and a non-zero exit."""

from __future__ import annotations


class DiscoError(Exception):
    """A user-facing error: bad input, bad config, missing file. The message is one line."""


class DataError(DiscoError):
    """Invalid ARC input or dataset; may carry several problems, one line each."""

    def __init__(self, problems: list[str] | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        shown = self.problems[:50]
        more = len(self.problems) - len(shown)
        lines = shown + ([f"... and {more} more problems"] if more > 0 else [])
        super().__init__("\n".join(lines))
