"""The deploy worker's state in Redis: its heartbeat (so deploy_task fails fast when none runs) and the nonces of
the deploy messages it accepted (so a copied message cannot be replayed)."""

from __future__ import annotations

from Redis.connection import RedisStore, redis_errors


class DeployWorkerState(RedisStore):
    # -- heartbeat --------------------------------------------------------------------------------------------

    def beat(self, ttl_s: int, worker_id: str | None = None) -> None:
        """A deploy worker (``worker_id``, when given) is alive for the next ``ttl_s`` seconds."""
        with redis_errors(self.settings):
            pipe = self.client.pipeline(transaction=False)
            pipe.set(self.keys.deploy_worker_alive(), "1", ex=ttl_s)
            if worker_id:
                pipe.set(self.keys.deploy_worker_holder_alive(worker_id), "1", ex=ttl_s)
            pipe.execute()

    def holder_alive(self, worker_id: str) -> bool:
        """Whether the deploy worker ``worker_id`` (a lock's holder) still beats."""
        with redis_errors(self.settings):
            return bool(self.client.exists(self.keys.deploy_worker_holder_alive(worker_id)))

    def alive(self) -> bool:
        with redis_errors(self.settings):
            return bool(self.client.exists(self.keys.deploy_worker_alive()))

    def clear(self, worker_id: str | None = None) -> None:
        with redis_errors(self.settings):
            self.client.delete(self.keys.deploy_worker_alive())
            if worker_id:
                self.client.delete(self.keys.deploy_worker_holder_alive(worker_id))

    # -- nonces -----------------------------------------------------------------------------------------------

    def first_use(self, nonce: str, ttl_s: int) -> bool:
        """Record ``nonce``; True when it was new (kept ``ttl_s``, the window in which a signature is accepted)."""
        with redis_errors(self.settings):
            return bool(self.client.set(self.keys.deploy_nonce(nonce), "1", nx=True, ex=ttl_s))
