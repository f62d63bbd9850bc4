"""`python -m vidcap.scheduler.array_entry FOLDER`: what each task of a vidcap Slurm array runs.

A module of its own, as submitit's `core/_submit.py` is: run as `__main__`, slurm_array itself would hold a
second ArrayPickle class that the array's pickle (which names vidcap.scheduler.slurm_array) is not of.
The preemption signal is held from here, before the seconds of imports, until submitit's handler is in
place (`slurm_array.release_held_signal`): in between it would kill the task instead of requeueing it.
"""

import os
import signal

HELD = getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2"), signal.SIGUSR2)
signal.pthread_sigmask(signal.SIG_BLOCK, {HELD})

from vidcap.scheduler.slurm_array import main  # noqa: E402  (after the signal is held)

if __name__ == "__main__":
    main(held_signal=HELD)
