"""The `rootfree` command line: argparse and the commands (`commands`), each on one
`service.client.Client`; the token it sends (`token`), rich tables and plain text (`render`), live
views (`live`), the external-trial agent (`agent`), the demo (`demo`), the service's start-up checks
(`preflight`), `rootfree verdict` on a CSV (`verdict`), a service on this machine (`localhost`)."""

from service.cli.commands import main

__all__ = ["main"]
