"""Scheduling shard tasks: Slurm job arrays through submitit, their resources, states and requeue."""
