"""The Jupyter server's routes for the JupyterLab extension: ghost text, the fix, status."""
