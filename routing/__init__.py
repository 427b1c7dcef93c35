"""Which version answers a request: route tables, sticky assignment, canaries, shadows."""
