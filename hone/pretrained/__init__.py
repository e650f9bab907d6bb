"""Pretrained Hugging Face checkpoints: their architectures, weights and tokenizers.

Submodules load on first import of their own (`hone.pretrained.tokenizer`, ...), so importing
this package pulls in nothing heavy.
"""
