"""A TCP proxy that delays every byte by a fixed time in each direction: a relay far away.

This machine has no netem, so latency is added in the application. Data keeps
its order; each chunk read is written `delay` seconds after it arrived, so the
proxy adds latency without limiting bandwidth.

    python -m bench.delay_proxy --listen 127.0.0.1:2626 --upstream 127.0.0.1:2525 --delay 0.010
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib

import uvloop


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def deliver() -> None:
        while True:
            due, data = await queue.get()
            if not data:
                break
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()
        with contextlib.suppress(OSError):
            writer.close()

    delivery = asyncio.create_task(deliver())
    try:
        while data := await reader.read(65536):
            queue.put_nowait((loop.time() + delay, data))
    except OSError:
        pass
    finally:
        queue.put_nowait((loop.time() + delay, b""))
        await delivery


async def serve(listen: tuple[str, int], upstream: tuple[str, int], delay: float) -> None:
    async def handle(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        server_reader, server_writer = await asyncio.open_connection(*upstream)
        await asyncio.gather(
            _pump(client_reader, server_writer, delay),
            _pump(server_reader, client_writer, delay),
            return_exceptions=True,
        )

    server = await asyncio.start_server(handle, *listen, backlog=1024)
    print(
        f"delay proxy {listen[0]}:{listen[1]} -> {upstream[0]}:{upstream[1]}, +{delay * 1000:.0f} ms per way",
        flush=True,
    )
    async with server:
        await server.serve_forever()


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--listen", type=_address, required=True)
    parser.add_argument("--upstream", type=_address, required=True)
    parser.add_argument("--delay", type=float, default=0.010, help="seconds added in each direction")
    args = parser.parse_args()
    uvloop.run(serve(args.listen, args.upstream, args.delay))


if __name__ == "__main__":
    main()
