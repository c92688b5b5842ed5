"""make demo: the seed's scenario on the local cluster, live (see __main__.py)."""
