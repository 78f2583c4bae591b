"""The one exception a user should see for a run that cannot start."""


class ConfigError(ValueError):
    """A config that cannot run; the message lists every problem found."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__('invalid config:\n  ' + '\n  '.join(self.problems))
