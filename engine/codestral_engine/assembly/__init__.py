"""The assembly of a model, above the backends: which model (`model_choice`), where its weights
are (`hub`, `releases`, `download`: pull), whether it fits (`preflight`), and `load`, which puts
a checkpoint, a tokenizer and a backend together into an `Engine`."""
