"""DiffALL client side: the ``diffall`` command line (and, later, the Python SDK)."""
