"""`dlforge serve`: a finished run behind HTTP (FastAPI on uvicorn).

Where the run and the port come from, first match wins:
- run: the RUN argument, $DLFORGE_RUN, or /opt/ml/model (where SageMaker puts the model when it runs
  `docker run IMAGE serve`);
- port: --port, $DLFORGE_PORT, $AIP_HTTP_PORT (Vertex AI), 8080 when the run is SageMaker's, else 8000;
- host: --host, $DLFORGE_HOST, 127.0.0.1 (a container image sets 0.0.0.0).

uvicorn handles SIGTERM gracefully: it stops accepting, lets in-flight requests finish (up to
`serve.limits.shutdown_grace_s`, under Kubernetes' 30 s), then the app's lifespan closes the batcher and the
request log. A process still loading the model has nothing in flight: SIGTERM ends it at once.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dlforge.errors import DlforgeError

SAGEMAKER_MODEL_DIR = Path("/opt/ml/model")
WORKER_START_S = 120
_CONFIG_ENV = "DLFORGE_SERVE_CONFIG"  # how `serve` hands its arguments to uvicorn's worker processes


def resolve(run: str | os.PathLike | None, host: str | None, port: int | None) -> tuple[Path, str, int]:
    """The run directory, host and port, from the arguments, the environment, or SageMaker's conventions."""
    sagemaker = run is None and not os.environ.get("DLFORGE_RUN")
    path = Path(run or os.environ.get("DLFORGE_RUN") or SAGEMAKER_MODEL_DIR)
    if sagemaker and not path.exists():
        raise DlforgeError(f"no run to serve: give one (dlforge serve RUN), set DLFORGE_RUN, or put it in {path}")
    host = host or os.environ.get("DLFORGE_HOST") or "127.0.0.1"
    env_port = os.environ.get("DLFORGE_PORT") or os.environ.get("AIP_HTTP_PORT")
    try:
        port = port or (int(env_port) if env_port else 8080 if sagemaker else 8000)
    except ValueError:
        raise DlforgeError(f"DLFORGE_PORT / AIP_HTTP_PORT: {env_port!r} is not a port number") from None
    return path, host, port


def serve(run: Path, host: str, port: int, workers: int = 1, backend: str = "torch", device: str = "cpu",
          overrides: list[str] | tuple[str, ...] = ()) -> None:
    """Run the server until SIGTERM / Ctrl-C. The model is loaded (and its errors reported) before binding."""
    import uvicorn

    from dlforge.serve.served import load_served

    config = {"run": str(run), "backend": backend, "device": device, "overrides": list(overrides)}
    with _ended_by_sigterm():
        served = load_served(**config)  # fail here, with a clear message, rather than inside a worker
    # uvicorn drains on SIGTERM, then re-raises the signal it caught under the handler it found: a no-op here,
    # so a graceful stop exits 0 (not 143), as container runtimes and process managers expect.
    signal.signal(signal.SIGTERM, lambda *_: None)
    os.environ[_CONFIG_ENV] = json.dumps(config)
    options = server_options(served.settings.limits)
    if workers == 1:
        from dlforge.serve.app import create_app

        uvicorn.run(create_app(served), host=host, port=port, log_level="info", **options)
    else:  # each worker process loads the model itself
        if served.request_log is not None:
            served.request_log.close()
        # uvicorn restarts a worker that does not answer its health ping in time; a worker is busy importing torch
        # and loading the model at first, which takes longer than uvicorn's 5 s on a loaded machine
        uvicorn.run("dlforge.serve:app_from_env", factory=True, host=host, port=port, workers=workers,
                    timeout_worker_healthcheck=WORKER_START_S, log_level="info", **options)


def server_options(limits: Any) -> dict[str, Any]:
    """uvicorn's settings from `serve.limits`: the header deadline (guard.py), the connection cap (beyond it uvicorn
    answers 503), the grace period on SIGTERM."""
    return {"http": "dlforge.serve.guard:HeaderDeadline", "limit_concurrency": limits.max_connections,
            "timeout_graceful_shutdown": limits.shutdown_grace_s, "access_log": False}


def app_from_env() -> Any:
    """uvicorn's factory in each worker process: the app for the run `serve` was given."""
    from dlforge.serve.app import create_app
    from dlforge.serve.served import load_served

    # Importing this module (torch with it) took seconds under uvicorn's signal handler, a bound method of its
    # Server: a SIGTERM that came meanwhile only set its `should_exit`. Then there is nothing to load.
    if getattr(getattr(signal.getsignal(signal.SIGTERM), "__self__", None), "should_exit", False):
        os._exit(0)
    with _ended_by_sigterm():
        return create_app(load_served(**json.loads(os.environ[_CONFIG_ENV])))


@contextlib.contextmanager
def _ended_by_sigterm() -> Iterator[None]:
    """While the model loads, SIGTERM (or Ctrl-C) ends the process at once: nothing is in flight to drain, and a
    process that finished loading first would bind, start and drain past Kubernetes' grace period."""
    def leave(signum: int, frame: Any) -> None:
        os.write(2, f"{signal.Signals(signum).name} while loading the model: exiting\n".encode())
        os._exit(0)  # not SystemExit: a library's `except BaseException` while importing could swallow it

    previous = {sig: signal.signal(sig, leave) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
