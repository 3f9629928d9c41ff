"""The CLI's expected failures."""


class CliError(Exception):
    """An expected failure: printed as one clear line, exit code 1."""
