"""Prints a file's content each time it changes (what a program with a hot reload sees), and named env vars.

usage: watch_file.py PATH [ENV_NAME ...]
"""

import os
import sys
import time

path, names = sys.argv[1], sys.argv[2:]
for name in names:
    print(f"env {name}={os.environ.get(name, '<unset>')}", flush=True)
last = None
while True:
    try:
        with open(path) as f:
            content = f.read()
    except OSError as exc:
        content = f"<{exc.strerror}>"
    if content != last:
        print(f"content {content!r}", flush=True)
        last = content
    time.sleep(0.1)
