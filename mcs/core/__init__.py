"""The foundation of MCS: everything the other layers stand on, importing only the standard library, pydantic
and (lazily, inside functions) celery.

errors (one root, rebuilt from the wire with ``MCSError.from_dict``), settings (every limit), names, paths,
requirements, task models, tool result models, the Celery configuration and task naming, the worker image
contract, and the deploy wire protocol (message kinds, signing, bundle format).
"""
