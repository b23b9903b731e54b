"""A small shop's pricing code, used by project_context.ipynb."""
