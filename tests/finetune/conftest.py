"""Fixtures of the fine-tuning tests: the tiny Hugging Face checkpoints of tests/pretrained
(`tiny_checkpoint(name) -> folder`, written once per session), their text file (`notes`)
and one torch thread per test.

Imported, not moved: tests/pretrained keeps them. A session that runs both folders writes
the few checkpoints it uses twice (each under a second of `save_pretrained`).
"""

from tests.pretrained.conftest import _one_thread, notes, tiny_checkpoint  # noqa: F401  (fixtures)
