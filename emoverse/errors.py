"""Errors a user can cause and fix. The CLI prints them as one line, without a traceback."""


class EmoverseError(Exception):
    """Base class: bad input or a missing prerequisite, with a message naming the problem."""


class MirrorNotFoundError(EmoverseError):
    """The Gutenberg mirror (URL or folder) cannot be reached or does not exist."""


class BookNotFoundError(EmoverseError):
    """A Gutenberg id that the mirror does not have."""


class UnknownEmotionError(EmoverseError):
    """An emotion name outside the nine labels."""


class NoModelError(EmoverseError):
    """The registry holds no model for the asked emotion."""


class MissingStageOutputError(EmoverseError):
    """A stage was asked to run before the stage it reads from."""


class GenerationSettingError(EmoverseError):
    """A generation option (or the model asked to generate) outside what is allowed; `option`
    names it, so a CLI can print its flag and a server the request field."""

    def __init__(self, option: str, problem: str):
        super().__init__(f"{option} {problem}")
        self.option = option
        self.problem = problem

    def __reduce__(self) -> tuple:  # pickles (Prefect ships task errors) with both arguments
        return (type(self), (self.option, self.problem))


class IncompatibleModelsError(EmoverseError):
    """Models that cannot be blended (children of different bases or tokenizers, or of no
    registered base): the message names the versions."""
