"""jupyter-codestral: Codestral in Jupyter. `%load_ext jupyter_codestral` registers %%codestral.

Loading the extension imports no model runtime and starts no engine; that waits for first use.
"""

__version__ = "0.1.0"


def load_ipython_extension(ipython) -> None:
    from .magics import Codestral

    ipython.register_magics(Codestral(ipython))


def unload_ipython_extension(ipython) -> None:
    magics = ipython.magics_manager.registry.get("Codestral")
    if magics is not None and magics._target is not None and hasattr(magics._target, "engine"):
        magics._target.engine.close()
