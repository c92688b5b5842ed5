"""One redis.asyncio client per pool Redis, shared by every campaign of the pool, closed at exit.

Keyed by the RedisTarget (url and password), so a pool whose Redis moved (its spec, its Secret,
or its private Redis's endpoint changed) gets a new client; the old one is closed at exit.
"""

from __future__ import annotations

from redis.asyncio import Redis

from mailtrain_operator.pool_redis import RedisTarget

# Seconds. A publish pipeline carries 64 chunks (a few MB at most); a read is one round trip.
SOCKET_TIMEOUT = 30.0
CONNECT_TIMEOUT = 5.0


class RedisClients:
    def __init__(self) -> None:
        self._clients: dict[RedisTarget, Redis] = {}

    def get(self, target: RedisTarget) -> Redis:
        found = self._clients.get(target)
        if found is None:
            found = self._clients[target] = Redis.from_url(
                target.url,
                password=target.password,  # None: the URL's own, if it has one
                socket_timeout=SOCKET_TIMEOUT,
                socket_connect_timeout=CONNECT_TIMEOUT,
                health_check_interval=30,
            )
        return found

    async def close(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for redis_client in clients:
            await redis_client.aclose()
