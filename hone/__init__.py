"""hone: trains neural nets from one typed config."""

__version__ = "0.1.0"

# The model families register their configs with hone.config when imported; hone.config
# imports them on first need (hone.config.components), so `import hone` and the commands
# that read run files only (`hone doctor`) do not load torch.
