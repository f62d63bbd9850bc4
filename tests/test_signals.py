"""Stopping on a signal: every stop names its sender (pid and command line), and USR2 (Slurm's time limit)
stops only a process that runs in a Slurm job."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

WAITER = r"""
import sys, threading
from vidcap.signals import stop_on_signals
stop = threading.Event()
with stop_on_signals(stop):
    print("ready", flush=True)
    stopped = stop.wait(float(sys.argv[1]))
print("stopped" if stopped else "not stopped", flush=True)
"""

SENDER = "import os, sys, time; os.kill(int(sys.argv[1]), int(sys.argv[2])); time.sleep(3)"


def start_waiter(seconds: float, **env: str) -> subprocess.Popen[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    environ.update(env, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.Popen([sys.executable, "-c", WAITER, str(seconds)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=environ)
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    return proc


def send_from_another_process(pid: int, sig: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", SENDER, str(pid), str(int(sig))])


@pytest.mark.timeout(60)
def test_a_stop_names_the_sender_and_its_command_line() -> None:
    waiter = start_waiter(30)
    sender = send_from_another_process(waiter.pid, signal.SIGTERM)
    out, err = waiter.communicate(timeout=30)
    sender.kill()
    assert out == "stopped\n" and waiter.returncode == 0
    assert f"vidcap: SIGTERM from pid {sender.pid} ({sys.executable} -c import os, sys, time" in err, err
    assert "stopping after the batch in flight" in err


@pytest.mark.timeout(60)
def test_usr2_stops_only_inside_a_slurm_job() -> None:
    """USR2 means Slurm's time limit: a process in no Slurm job ignores it (saying who sent it) and goes
    on; the same signal in a Slurm job stops it after the batch."""
    outside = start_waiter(3)
    sender = send_from_another_process(outside.pid, signal.SIGUSR2)
    out, err = outside.communicate(timeout=30)
    sender.kill()
    assert out == "not stopped\n" and outside.returncode == 0, err
    assert f"vidcap: SIGUSR2 from pid {sender.pid} (" in err and "ignored (this process runs in no Slurm job" in err

    inside = start_waiter(30, SLURM_JOB_ID="4242")
    sender = send_from_another_process(inside.pid, signal.SIGUSR2)
    out, err = inside.communicate(timeout=30)
    sender.kill()
    assert out == "stopped\n", err
    assert f"vidcap: SIGUSR2 from pid {sender.pid} (" in err and "stopping after the batch in flight" in err


def test_sender_of_a_gone_process_and_of_the_kernel() -> None:
    from vidcap.signals import command_line, describe_sender

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    assert command_line(gone.pid) == "gone by now"

    class Info:
        si_pid, si_code = 0, getattr(signal, "SI_KERNEL", 0x80)

    assert describe_sender(Info()) == "the kernel"
    Info.si_code = 0
    assert describe_sender(Info()).startswith("an unknown sender")


def test_a_submitit_without_its_private_signal_method_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from submitit.core.job_environment import JobEnvironment

    from vidcap.errors import UserError
    from vidcap.scheduler.task import ShardTask

    monkeypatch.delattr(JobEnvironment, "_usr_sig")
    with pytest.raises(UserError, match=r"no JobEnvironment._usr_sig.*submitit>=1.5,<1.6"):
        ShardTask("vidcap.worker:run_shard")("/nonexistent", 0)



FLOODED = r"""
import json, os, signal, sys, threading, time
from vidcap.signals import on_signals
got = []
signal.signal(signal.SIGWINCH, lambda s, f: None)  # a handled signal: it interrupts the helper's wait
with on_signals({signal.SIGTERM, signal.SIGUSR2}, lambda s, sender: got.append([s, sender])):
    helper = next(t for t in threading.enumerate() if t.name == "vidcap-signals")
    end = time.monotonic() + float(sys.argv[1])
    while time.monotonic() < end:
        signal.pthread_kill(helper.ident, signal.SIGWINCH)
    phantoms = list(got)
    os.kill(os.getpid(), signal.SIGTERM)
    end = time.monotonic() + 10
    while len(got) == len(phantoms) and time.monotonic() < end:
        time.sleep(0.01)
print(json.dumps({"phantoms": phantoms, "real": got[len(phantoms):], "pid": os.getpid()}), flush=True)
"""


@pytest.mark.timeout(60)
def test_other_signals_interrupting_the_wait_make_no_phantom_stop() -> None:
    """Any handled signal (SIGWINCH here, SIGCHLD elsewhere) interrupts the helper thread's wait. CPython's
    sigtimedwait, interrupted just after its timeout ran out, returns an uninitialised siginfo: a signal nobody
    sent, with a random number (seen as "0 is not a valid Signals" in a rank, and as a stray SIGUSR2 that
    stopped a test's shard run outside Slurm). Only real signals may reach the receiver."""
    environ = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    done = subprocess.run([sys.executable, "-c", FLOODED, "3"], capture_output=True, text=True, env=environ,
                          timeout=50)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert result["phantoms"] == [], f"signals nobody sent reached the receiver: {result['phantoms'][:5]}"
    assert [s for s, _ in result["real"]] == [signal.SIGTERM], result["real"]
    assert f"pid {result['pid']} (" in result["real"][0][1]  # the real one names its sender: the process itself
