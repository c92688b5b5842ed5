"""The baseline: a bare aiosmtplib loop sending one pre-built message over N connections.

No rendering, no Redis, no bookkeeping: what aiosmtplib alone does on this
machine, on the same event loop (uvloop) the sender uses. Prints messages/s.

    python -m bench.bare_smtp --port 2525 --connections 10 --messages 20000 --message-file m.eml
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

import aiosmtplib
import uvloop


async def run(host: str, port: int, connections: int, messages: int, message: bytes) -> float:
    remaining = messages

    async def connection() -> None:
        nonlocal remaining
        client = aiosmtplib.SMTP(hostname=host, port=port, start_tls=False, timeout=30)
        await client.connect()
        while remaining > 0:
            remaining -= 1
            await client.sendmail("news@acme.example", [f"r{remaining}@example.org"], message)
        await client.quit()

    started = time.perf_counter()
    await asyncio.gather(*(connection() for _ in range(connections)))
    return messages / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--connections", type=int, default=10)
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--message-file", type=Path, required=True)
    args = parser.parse_args()
    rate = uvloop.run(
        run(args.host, args.port, args.connections, args.messages, args.message_file.read_bytes())
    )
    print(json.dumps({"messages_per_second": rate}))


if __name__ == "__main__":
    main()
