"""Test support shared by the tests and bench/ (never imported by the product): a local service
(`local`) and the runner on a local Ray (`ray_runner`)."""

from tests.support.local import finished_trials, free_port, ray_auth_token_file, wait_healthy

__all__ = ["finished_trials", "free_port", "ray_auth_token_file", "wait_healthy"]
