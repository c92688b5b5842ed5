"""make demo: its summary and view model (fast), and its scenario run headless on the local cluster."""
