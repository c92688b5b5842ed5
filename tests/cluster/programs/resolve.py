"""A client that keeps looking names up: one JSON line per round, every 0.3 s, for as long as it runs.

    resolve.py [--ping HOST]... NAME...

Each round prints the addresses getaddrinfo gives for every NAME ([] when it does not resolve), and
whether a Redis PING through redis-py reached each HOST on port 6379 (redis-py resolves through
getaddrinfo, as the sender and the operator do; a HOST that does not resolve is not tried). The process
never restarts, so a round that finds a new address proves the lookup read the changed /etc/hosts.
"""

import argparse
import json
import os
import socket
import time

import redis

parser = argparse.ArgumentParser()
parser.add_argument("--ping", action="append", default=[])
parser.add_argument("names", nargs="*")
args = parser.parse_args()


def addresses(name: str) -> list[str]:
    try:
        found = socket.getaddrinfo(name, 6379, type=socket.SOCK_STREAM)
    except socket.gaierror:
        return []
    return sorted({str(entry[4][0]) for entry in found})


def ping(host: str) -> bool | str:
    if not addresses(host):  # redis-py would retry, with back-off: a slow round, not a quick answer
        return "does not resolve"
    try:
        with redis.Redis(host=host, port=6379, socket_timeout=1, socket_connect_timeout=1) as client:
            return bool(client.ping())
    except redis.RedisError as exc:
        return str(exc)


while True:
    round_ = {
        "time": time.time(),
        "pid": os.getpid(),
        "resolved": {name: addresses(name) for name in args.names},
        "pong": {host: ping(host) for host in args.ping},
    }
    print(json.dumps(round_), flush=True)
    time.sleep(0.3)
