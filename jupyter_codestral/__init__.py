"""jupyter-codestral: Codestral in Jupyter. `%load_ext jupyter_codestral` registers %%codestral.

Loading the extension imports no model runtime and starts no engine; that waits for first use.
As a Jupyter server extension (enabled on install) it serves the ghost-text routes that the
JupyterLab extension in `labextension/` calls.
"""

__version__ = "0.1.0"


def load_ipython_extension(ipython) -> None:
    from .magic.magics import Codestral

    ipython.register_magics(Codestral(ipython))


def unload_ipython_extension(ipython) -> None:
    magics = ipython.magics_manager.registry.get("Codestral")
    if magics is None:
        return
    if magics.failures in ipython.events.callbacks["post_run_cell"]:
        ipython.events.unregister("post_run_cell", magics.failures)
    magics.link.drop()  # closes an in-process engine, or the shared engine's connections


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    return [{"src": "labextension", "dest": "jupyter-codestral"}]


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "jupyter_codestral"}]


def _load_jupyter_server_extension(serverapp) -> None:
    from .lab.handlers import setup_handlers

    codestral = setup_handlers(serverapp)
    serverapp.log.info("jupyter_codestral: ghost-text routes at %s", "codestral/")
    # Read the tokenizer now, off the event loop, so the first keystroke does not wait for it.
    import threading

    threading.Thread(target=lambda: codestral.prompts.counter, daemon=True).start()
