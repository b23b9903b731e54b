"""What the model is told: the notebook, the kernel's live objects and history, the
project's own code, a traceback."""
