"""The %%codestral magic, in the kernel."""
