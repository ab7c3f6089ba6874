"""optuna-dashboard on the study storage, bound to localhost unless asked otherwise."""

from __future__ import annotations

from typing import Any, Callable

_LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def no_login_warning(host: str, port: int) -> str:
    """What `medsweep dashboard` says first: optuna-dashboard has no login, so who can reach the
    address can read and edit every study in the storage."""
    if host in _LOCAL_HOSTS:
        return (f"warning: the dashboard has no login: anyone with an account on this machine can open "
                f"http://{host}:{port}/ and read and edit the studies; from elsewhere, use an SSH tunnel "
                f"(ssh -L {port}:127.0.0.1:{port} THIS_HOST)")
    return (f"warning: the dashboard has no login: anyone who can reach {host}:{port} can read and edit the "
            "studies; keep it behind a firewall or an SSH tunnel, or bind 127.0.0.1 (the default)")


def serve_dashboard(storage: Any, host: str, port: int, echo: Callable[[str], None]) -> None:
    from optuna_dashboard import run_server

    echo(no_login_warning(host, port))
    echo(f"dashboard on http://{host}:{port}/ (Ctrl-C stops it)")
    run_server(storage, host=host, port=port)
