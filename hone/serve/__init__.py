"""`hone serve`: a trained model behind a safe, fast HTTP API.

FastAPI routes (app), micro-batching of predictions (batching), continuous batching of
completions (scheduler) and their pieces as the event loop awaits them (generation), the door every request passes (gate: key, body limit, drain, metrics),
Prometheus metrics (metrics), the loaded model (model), and uvicorn with a graceful drain
(server). Python users call `serve(ServeSettings(run=...))` or mount `create_app(...)`.
"""

from hone.serve.settings import ServeSettings

__all__ = ["ServeSettings", "create_app", "serve"]


def serve(settings: ServeSettings) -> int:
    """Serve `settings.run` until SIGTERM; returns the exit code."""
    from hone.serve.server import serve as run

    return run(settings)


def create_app(settings: ServeSettings):  # type: ignore[no-untyped-def]
    """The ASGI app, for mounting under another server."""
    from hone.serve.app import create_app as build

    return build(settings)
