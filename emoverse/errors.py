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


class SettingError(EmoverseError):
    """A setting's value is the problem. `setting` is the field's name, as flow parameters,
    the UI's run form and the HTTP API name it, and the message reads `<setting> <problem>`;
    a CLI prints its own flag in its place (`--min-poems is 5, ...`)."""

    def __init__(self, setting: str, problem: str):
        super().__init__(f"{setting} {problem}")
        self.setting = setting
        self.problem = problem

    def __reduce__(self) -> tuple:  # pickles (Prefect ships task errors) with both arguments
        return (type(self), (self.setting, self.problem))


class GenerationSettingError(SettingError):
    """A generation option (or the model asked to generate) outside what is allowed."""

    @property
    def option(self) -> str:
        return self.setting


class IncompatibleModelsError(EmoverseError):
    """Models that cannot be blended (children of different bases or tokenizers, or of no
    registered base): the message names the versions."""
