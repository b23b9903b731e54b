"""Checkpoints as data: layouts and their tensors, the typed model config, tiny models. Imports
no other room of the engine."""
