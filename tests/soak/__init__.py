"""The randomized fault-injection soak of the sender pool (issue 6); run_soak.py is the entry point."""
