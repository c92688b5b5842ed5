"""Prints each signal it gets, one line each; exits 0 on SIGTERM, as a well-behaved server does.

usage: signals.py [PIDFILE]  (writes its pid there, so a preStop hook can signal it)
"""

import os
import signal
import sys
import time


def on_signal(number: int, _frame: object) -> None:
    # os.write, not print: a second signal can arrive while the first one's line is being written.
    os.write(sys.stdout.fileno(), f"{signal.Signals(number).name}\n".encode())
    if number == signal.SIGTERM:
        sys.exit(0)


for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1):
    signal.signal(sig, on_signal)
if len(sys.argv) > 1:
    with open(sys.argv[1], "w") as f:
        f.write(str(os.getpid()))
print("started", flush=True)
while True:
    time.sleep(3600)
