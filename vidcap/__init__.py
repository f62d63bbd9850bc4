"""vidcap: caption huge video datasets with vision-language models on Slurm clusters."""

__version__ = "0.1.0"
