"""The tokenizer of a pretrained checkpoint.

It lives in hone.data.text (`load_tokenizer` returns it for a checkpoint's folder, and data
sits below this package, so it cannot import from here); this module is its name beside the
rest of hone.pretrained.
"""

from __future__ import annotations

from hone.data.text.pretrained_tokenizer import PretrainedTokenizer

__all__ = ["PretrainedTokenizer"]
