"""Command back-ends: one module per command (train, evaluate, predict, explain, audit, ct, figures), above the
layers they use."""
