"""`rootfree agent STUDY_ID [--count N] -- COMMAND ...`: trains an external study's trials on
this machine by running COMMAND once per claimed trial (as `wandb agent` runs a sweep's script).

The command gets its trial in the environment: ROOTFREE_TRIAL (the claim response, JSON),
ROOTFREE_STUDY_ID, ROOTFREE_URL, ROOTFREE_TOKEN; it reports epochs with the Python client
(`service.client.current_trial()`) or plain HTTP. Exit 0 completes the trial (unless the script
already ended it); another exit code fails it with the tail of its stderr; with `--timeout S` a
command still running after S seconds is killed and its trial failed. A trial's failure never
stops the agent (it goes on to the next trial); Ctrl-C fails the running trial and stops it.
While the command runs the agent renews the claim's lease
(a heartbeat every third of it), so only a dead agent loses its trial. The agent waits while
nothing may start (stage 2 opens when stage 1 has ended) and exits 0 once the study has nothing
left.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence

import httpx

from service.client import Client, ClientError, StudyEnded, Trial

STDERR_TAIL = 2000  # characters of the command's stderr a failed trial keeps as its reason


def _die_with_parent() -> None:
    """Linux: the command gets SIGKILL when the agent dies, so a killed agent leaves no script
    training (and reporting) a trial whose claim is about to lapse."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _say(message: str) -> None:
    print(f"rootfree agent: {message}", file=sys.stderr, flush=True)


def _tee(stream, out, tail: collections.deque) -> None:
    """Copies the command's stderr through to ours and keeps its last lines."""
    for line in iter(stream.readline, b""):
        out.buffer.write(line) if hasattr(out, "buffer") else out.write(line.decode(errors="replace"))
        out.flush()
        tail.append(line.decode(errors="replace"))
    stream.close()


def _run(trial: Trial, command: Sequence[str], client: Client, study_id: str,
         timeout_s: float | None = None) -> tuple[int | None, str]:
    """Runs the command for the trial: (its exit code, or None when it outlived `timeout_s` and
    was killed; the tail of its stderr)."""
    env = {**os.environ, "ROOTFREE_TRIAL": json.dumps(trial.claim), "ROOTFREE_STUDY_ID": study_id,
           "ROOTFREE_URL": client.url, "ROOTFREE_TOKEN": client.token or ""}
    # its own process group, so a timeout or Ctrl-C ends the command's children too (a launcher's
    # or a shell's training process), not only the process the agent started
    proc = subprocess.Popen(list(command), env=env, stderr=subprocess.PIPE, process_group=0,
                            preexec_fn=_die_with_parent if sys.platform == "linux" else None)
    tail: collections.deque[str] = collections.deque(maxlen=50)
    reader = threading.Thread(target=_tee, args=(proc.stderr, sys.stderr, tail), daemon=True)
    reader.start()
    heartbeat = trial.keep_alive()  # the claim lives as long as this agent does
    try:
        rc: int | None = proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:  # a hung command: its trial fails, the agent goes on
        rc = None
        _end_group(proc, signal.SIGTERM)
    except KeyboardInterrupt:
        # The terminal's Ctrl-C reaches the agent's process group only: passed on to the
        # command's, which gets a moment to end as it would at the terminal.
        _end_group(proc, signal.SIGINT)
        raise
    finally:
        heartbeat.stop()
        reader.join(timeout=5)
    return rc, "".join(tail)[-STDERR_TAIL:].strip()


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass  # the group has ended already


def _end_group(proc: subprocess.Popen, sig: int) -> None:
    """Sends `sig` to the command's process group; whatever of it still runs 10 s later is killed."""
    _signal_group(proc, sig)
    try:
        proc.wait(timeout=10)
    except (subprocess.TimeoutExpired, KeyboardInterrupt):
        pass
    _signal_group(proc, signal.SIGKILL)  # its children too, even once the command itself has ended
    proc.wait()


def run_agent(client: Client, study_id: str, command: Sequence[str], count: int | None = None,
              poll_s: float = 2.0, timeout_s: float | None = None) -> int:
    """Claims and runs trials until the study has nothing left (0) or `count` trials ran (0);
    Ctrl-C: 130. `timeout_s`: the most one trial's command may run."""
    taken, waiting, reached = 0, False, False
    while count is None or taken < count:
        try:
            trial = client.claim(study_id)
        except StudyEnded as e:
            _say(f"{e.detail}; {taken} trial(s) run here")
            return 0
        except ClientError as e:
            _say(e.detail)
            return 2
        except httpx.TransportError as e:
            if not reached:  # a wrong --url, most likely: say so rather than wait forever
                _say(f"cannot reach the service at {client.url}: {e}")
                return 2
            _say(f"the service at {client.url} does not answer ({e}); trying again")
            time.sleep(max(poll_s, 5.0))
            continue
        reached = True
        if trial is None:
            if not waiting:
                _say("no trial may start now (a stage waits for the one before, or the study's "
                     "max_concurrent_trials are out); waiting")
                waiting = True
            time.sleep(poll_s)
            continue
        waiting, taken = False, taken + 1
        label = f"trial {trial.id} ({trial.optimizer}, stage {trial.stage})"
        hp = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                      for k, v in trial.hyperparameters.items())
        _say(f"{label}: {hp}")
        try:
            rc, tail = _run(trial, command, client, study_id, timeout_s)
        except KeyboardInterrupt:
            _end(trial, label, fail="interrupted (Ctrl-C on the agent)")
            return 130
        except OSError as e:  # the command cannot start: every trial would fail the same way
            _end(trial, label, fail=f"the command could not start: {e}")
            return 2
        if rc is None:
            _end(trial, label, fail=f"the command did not finish within {timeout_s:g} s (--timeout); it was killed"
                                    + (f": {tail}" if tail else ""))
        elif rc == 0:
            _end(trial, label)
        else:
            why = f"signal {-rc}" if rc < 0 else f"exit code {rc}"
            _end(trial, label, fail=f"the command failed ({why})" + (f": {tail}" if tail else ""))
    _say(f"{taken} trial(s) run here (--count)")
    return 0


def _end(trial: Trial, label: str, fail: str | None = None) -> None:
    """Completes or fails the trial; a trial the script already ended keeps its status (the
    service answers the retry with it). Whatever the service answers, the agent goes on: a
    trial's end never stops it (issue 30)."""
    try:
        try:
            status = trial.fail(fail) if fail is not None else trial.complete("completed")
        except ClientError as e:
            if e.status != 422 or fail is not None:
                raise
            # exited 0 without ever reporting the study's metric
            status = trial.fail(f"the command exited 0 without reporting {trial.metric!r}")
    except httpx.TransportError as e:  # its claim lapses and the trial goes back to pending
        _say(f"{label}: could not reach the service to end it ({e})")
        return
    except ClientError as e:  # 409/410: ended before (another status) or the study has ended
        _say(f"{label}: {e.detail}")
        return
    _say(f"{label}: {status}")
