"""Serving over HTTP: Mistral's API, the `serve` command and the connection file."""
