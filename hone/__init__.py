"""hone: trains neural nets from one typed config."""

__version__ = "0.1.0"

# The model families register their configs with hone.config when imported, and a config
# cannot be built without them; importing them here makes that hold for every `hone.*` import.
import hone.models  # noqa: E402, F401
