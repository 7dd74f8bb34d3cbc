"""Deploy side of MCS: the worker base image, task images and hardened worker containers."""
