"""optuna-dashboard on the study storage, bound to localhost unless asked otherwise."""

from __future__ import annotations

from typing import Any, Callable

_LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def serve_dashboard(storage: Any, host: str, port: int, echo: Callable[[str], None]) -> None:
    from optuna_dashboard import run_server

    if host not in _LOCAL_HOSTS:
        echo(f"warning: optuna-dashboard has no authentication; anyone who can reach {host}:{port} "
             "can read and edit the studies. Keep it behind a firewall or an SSH tunnel.")
    echo(f"dashboard on http://{host}:{port}/ (Ctrl-C stops it)")
    run_server(storage, host=host, port=port)
