"""A local rootfree service for tests and benchmarks: a free port, waiting until a just-started
`rootfree serve` answers (both from service/cli/localhost.py, which the demo uses too), counting a
study's ended trials."""

from __future__ import annotations

from service.cli.localhost import free_port, ray_auth_token_file, wait_healthy
from service.cli.render import finished

__all__ = ["finished_trials", "free_port", "ray_auth_token_file", "wait_healthy"]


def finished_trials(study: dict) -> int:
    """Trials that have ended, over every optimizer and stage of a `GET /studies/{id}` body."""
    return sum(finished(c["by_status"]) for o in study["optimizers"] for c in o["stages"].values())
