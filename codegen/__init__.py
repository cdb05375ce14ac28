"""mcutrain: compile an ONNX model + training spec into static-memory C that trains on an MCU."""
__version__ = "0.1.0"

from .api import generate, inspect  # noqa: E402
from .build import HostTrainer, load_host  # noqa: E402
from .errors import McutrainError  # noqa: E402
from .paths import runtime_dir  # noqa: E402

__all__ = ["generate", "inspect", "load_host", "HostTrainer", "McutrainError", "runtime_dir"]
