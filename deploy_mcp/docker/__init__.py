"""The one Docker boundary of MCS: nothing else in the project imports docker-py.

- :mod:`.client`: the one client factory, the daemon probe and the one translation of docker-py errors into
  MCS errors (secrets redacted).
- :mod:`.runtime`: :class:`~deploy_mcp.docker.runtime.DockerRuntime`, a hardened container per task version;
  :mod:`.build` is its image build, :mod:`.containers` what it reads from ``docker inspect``.
- :mod:`.base_image`: the worker base image, built locally (:mod:`.recipe` says what is in it, :mod:`.rootfs`
  makes its root folder); ``python -m deploy_mcp.docker.base_image [--force]``.
- :mod:`.wheelhouse`: a task's pinned requirements resolved inside a container of the base image, cached.
- :mod:`.deps`: the dependency image of a requirement set (the base image plus its wheels, installed once).
"""
