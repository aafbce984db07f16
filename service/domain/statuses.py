"""The statuses a study and a trial go through, and the sets of them the code asks about: spelled
here once (the API, the store, the run-time, the followers and the client all import them)."""

# A study: queued -> running -> completed | failed | cancelled
STUDY_STATUSES = ("queued", "running", "completed", "failed", "cancelled")
ACTIVE = ("queued", "running")  # the runner still has work for it
TERMINAL = ("completed", "failed", "cancelled")  # it has ended; nothing more happens to it

# A trial: pending -> running -> completed | stopped (early, by ASHA) | diverged | failed
TRIAL_STATUSES = ("pending", "running", "completed", "stopped", "diverged", "failed")
FINISHED = ("completed", "diverged", "failed", "stopped")  # the trial has ended
RESULTS = ("completed", "stopped")  # trials whose objective counts (stopped: at its last report)
