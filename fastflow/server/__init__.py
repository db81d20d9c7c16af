"""The network broker (``fastflow serve``): one process, one event loop,
one engine (``fastflow.Flow``) behind the native protocol (docs/protocol.md)
and an HTTP monitoring endpoint.  The manual is docs/server.md.

    from fastflow.server import Server, ServerConfig
    server = Server(ServerConfig(port=0, monitor_port=0))
    await server.start()            # server.port: where it listens
    ...
    await server.stop()             # drain: flush, fsync, close

The names below are imported on first use, so that ``python -m
fastflow.server.app`` runs the module only once.
"""

__all__ = ("ConfigError", "Server", "ServerConfig", "add_serve_arguments", "hash_password",
           "hash_password_cli", "run_serve", "verify_password")

_WHERE = {"Server": "app", "add_serve_arguments": "app", "run_serve": "app",
          "hash_password": "auth", "hash_password_cli": "auth", "verify_password": "auth",
          "ConfigError": "config", "ServerConfig": "config"}


def __getattr__(name):
    mod = _WHERE.get(name)
    if mod is None:
        raise AttributeError("module 'fastflow.server' has no attribute {!r}".format(name))
    import importlib

    value = getattr(importlib.import_module("fastflow.server." + mod), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
