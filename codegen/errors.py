"""Typed errors: every problem the user can fix is one of these, shown as one message, exit code 2."""


class McutrainError(Exception):
    """Base class: a message that names the node/tensor at fault and what to do about it."""


class ModelError(McutrainError):
    """The ONNX file is missing, unreadable, invalid or inconsistent."""


class UnsupportedError(McutrainError):
    """The model uses an op, attribute or dtype that the compiler does not implement."""


class ShapeError(McutrainError):
    """A tensor has a dynamic or unknown shape, or shapes do not fit together."""


class OptionError(McutrainError):
    """A command-line / API option is invalid for this model."""


class DataError(McutrainError):
    """Training data does not match the generated trainer (shape, dtype, labels)."""


class BuildError(McutrainError):
    """The C compiler failed on generated code (a bug in mcutrain: please report it)."""


class InternalError(McutrainError):
    """An invariant of the compiler does not hold: a bug in mcutrain, never silently wrong output."""

    def __init__(self, message: str):
        super().__init__(f"{message} (a bug in mcutrain, please report it)")


class ToolchainError(McutrainError):
    """A cross compiler, C library or QEMU needed for a target is not installed (names the package)."""


class FitError(McutrainError):
    """The model, data set or firmware does not fit the target's RAM or flash (names the sizes)."""


class OutputError(McutrainError):
    """An output file cannot be written (disk full, permissions); earlier output is left as it was."""


class McutrainWarning(UserWarning):
    """Something that works but may not be what the user wants (e.g. tied parameters); the CLI
    prints it as one line on stderr."""
