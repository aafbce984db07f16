"""The typed Python client of the rootfree REST API (on httpx).

Submit a study and wait for it:

    from service.client import Client
    client = Client("http://127.0.0.1:8000", token)
    study = client.submit({"name": "s", "workload": "fmnist_cnn", "optimizers": ["adamw", "rfrmsprop"]})
    study.wait()
    print(study.best(), study.export())

Train an external study's trials (`execution: external`) on this machine:

    for trial in client.trials(study_id):
        with trial:                                   # completes it; an exception fails it
            opt = trial.build_optimizer(model.parameters())
            for epoch in range(1, trial.budget["epochs"] + 1):
                ...
                if not trial.report(epoch, test_error=err, train_loss=loss):
                    break                             # ASHA stopped it (or it diverged)

A script that `rootfree agent` runs finds its trial with `current_trial()`.

The modules: `core` (`Client`, `Study`, `current_trial`), `trial` (`Trial`, its `Heartbeat`),
`errors`, `retry` (reads and idempotent calls retried through a slow server, up to
`ROOTFREE_CLIENT_TIMEOUT_S`).
"""

from service.client.core import DEFAULT_URL, REPORT_TIMEOUT_S, Client, Study, current_trial
from service.client.errors import ClientError, StudyEnded
from service.client.retry import ServiceUnavailable, client_timeout_s, send
from service.client.trial import Heartbeat, Trial

__all__ = ["DEFAULT_URL", "REPORT_TIMEOUT_S", "Client", "ClientError", "Heartbeat", "ServiceUnavailable", "Study",
           "StudyEnded", "Trial", "client_timeout_s", "current_trial", "send"]
