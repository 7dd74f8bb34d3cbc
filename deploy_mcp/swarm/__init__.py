"""The Docker Swarm worker runtime (``MCS_WORKER_RUNTIME=swarm``): a version's group of workers is one service.

- :mod:`.runtime`: :class:`~deploy_mcp.swarm.runtime.SwarmRuntime`, the GroupRuntime (start, members, scale,
  remove, logs, workers); the build is the docker runtime's, composed.
- :mod:`.service_spec`: what a service looks like (names, hardening, the password as a secret), pure.
- :mod:`.tasks`: a group's members and states from Swarm's tasks, its logs by replica, pure.
- :mod:`.registry`: tag and push to ``MCS_SWARM_REGISTRY``, the digest a service pins, whether the registry answers.
- :mod:`.teardown`: stopping replicas (this node's at once) and removing a service's secret, network, leftovers.

Like :mod:`deploy_mcp.docker`, it may import docker-py; nothing outside these two packages does.
"""
