"""Language-modelling data: tokenizers, the Shakespeare corpus, token caching, data sets.

Importing this package registers the data sets `shakespeare`, `text`, `tokens` and
`checkpoint` (a pretrained checkpoint's: its tokenizer, no data).
"""

from hone.data.text import checkpoint, datasets  # noqa: F401  (register the data sets)
from hone.data.text.corpus import shakespeare_text
from hone.data.text.tokenizers import TOKENIZERS, build_tokenizer, load_tokenizer

__all__ = ["TOKENIZERS", "build_tokenizer", "load_tokenizer", "shakespeare_text"]
