"""The errors rnnl2 reports to users as a message and exit code 2, instead of a traceback."""


class Rnnl2Error(Exception):
    """An error the user can fix (bad config, data or checkpoint): shown as a message, exit code 2."""


class ConfigError(Rnnl2Error):
    """The config file or an override is invalid."""
