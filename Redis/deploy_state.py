"""The deploy worker's state in Redis: its heartbeat (so deploy_task fails fast when none runs) and the nonces of
the deploy messages it accepted (so a copied message cannot be replayed)."""

from __future__ import annotations

from Redis.connection import RedisStore, redis_errors


class DeployWorkerState(RedisStore):
    # -- heartbeat --------------------------------------------------------------------------------------------

    def beat(self, ttl_s: int) -> None:
        """A deploy worker is alive for the next ``ttl_s`` seconds."""
        with redis_errors(self.settings):
            self.client.set(self.keys.deploy_worker_alive(), "1", ex=ttl_s)

    def alive(self) -> bool:
        with redis_errors(self.settings):
            return bool(self.client.exists(self.keys.deploy_worker_alive()))

    def clear(self) -> None:
        with redis_errors(self.settings):
            self.client.delete(self.keys.deploy_worker_alive())

    # -- nonces -----------------------------------------------------------------------------------------------

    def first_use(self, nonce: str, ttl_s: int) -> bool:
        """Record ``nonce``; True when it was new (kept ``ttl_s``, the window in which a signature is accepted)."""
        with redis_errors(self.settings):
            return bool(self.client.set(self.keys.deploy_nonce(nonce), "1", nx=True, ex=ttl_s))
