"""Multi-process training through torch.distributed (see hone.distributed.context)."""
