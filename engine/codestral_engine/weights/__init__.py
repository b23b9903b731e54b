"""Checkpoints on disk: layouts, the typed config, the hub, memory preflight, tiny models, and
which model a process serves."""
