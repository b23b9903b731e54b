"""The classroom service: one JupyterHub managed service that holds the class's key to the
upstream (vLLM, our `serve`, Mistral's API), speaks Mistral's API to the students' servers and
kernels, enforces the course's policy by hub groups, shares the upstream fairly and counts use
per student. `configure_hub(c, ...)` in `jupyterhub_config.py` sets it all up; the service
itself runs as `python -m jupyter_codestral.classroom` (started by the hub).
"""

from .hub_config import configure_hub

__all__ = ["configure_hub"]
