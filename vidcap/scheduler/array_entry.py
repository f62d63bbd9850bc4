"""`python -m vidcap.scheduler.array_entry FOLDER`: what each task of a vidcap Slurm array runs.

A module of its own, as submitit's `core/_submit.py` is: run as `__main__`, slurm_array itself would hold a
second ArrayPickle class that the array's pickle (which names vidcap.scheduler.slurm_array) is not of.
"""

from vidcap.scheduler.slurm_array import main

if __name__ == "__main__":
    main()
