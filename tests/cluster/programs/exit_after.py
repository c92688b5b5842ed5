"""Exits with a code after some time: a crashing (or finishing) program. usage: exit_after.py CODE SECONDS"""

import sys
import time

print("running", flush=True)
time.sleep(float(sys.argv[2]))
sys.exit(int(sys.argv[1]))
