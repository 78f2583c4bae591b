"""The one exception a user should see for a run that cannot start, and the exit codes."""

EXIT_USAGE = 2     # a bad command line or config: one line on stderr, nothing written
EXIT_DIVERGED = 3  # the loss stopped being finite: the run ended, its last checkpoint finite; a result, not a crash


class ConfigError(ValueError):
    """A config that cannot run; the message lists every problem found."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__('invalid config:\n  ' + '\n  '.join(self.problems))


class UsageError(ValueError):
    """A command-line argument a command refuses (an output path that would lose data, say): one line."""
