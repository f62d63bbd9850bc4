"""Stopping on a signal: every stop names its sender (pid and command line), and USR2 (Slurm's time limit)
stops only a process that runs in a Slurm job."""

from __future__ import annotations

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
