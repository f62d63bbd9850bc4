"""vidcap: caption huge video datasets with vision-language models on Slurm clusters.

One run machinery (manifest -> shards -> job array or local workers -> durable results -> merge / remaining /
resume) serves every task: a task (vidcap.tasks) says what a row's answer is, a source (vidcap.sources) what a
row gives the engine, an engine (vidcap.engines) how the answer is made. See the README's Layout section.
"""

__version__ = "0.1.0"
