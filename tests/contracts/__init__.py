"""Contract suites: every implementation in a registry, by name, through the same checks.

Each suite is parametrized over its registry's names, so a newly registered model, data set,
loss, optimizer, schedule, tokenizer or strategy is checked without touching the tests; where
a suite needs per-implementation settings, a test fails until the new name has them.
"""
