"""The error type of bad input to results and reports (a missing results directory, a malformed file, an
unknown label): the CLI prints its message as one line and exits 2. results and reports do not import the
harness, so they have this type of their own; the harness's ConfigError plays the same part there."""


class ResultsInputError(ValueError):
    """The message says what was wrong and what to do."""
