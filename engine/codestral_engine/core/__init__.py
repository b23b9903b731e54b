"""The engine's core: requests, scheduling, generation, prompt cache, tokens and events."""
