"""What a submission returns: which shards went where (Slurm job ids, or local outcomes)."""

from __future__ import annotations

from dataclasses import dataclass, field

from vidcap.worker import ShardOutcome


@dataclass
class Submission:
    executor: str
    shards: list[int]
    job_ids: list[str] = field(default_factory=list)
    outcomes: list[ShardOutcome] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(o.finished for o in self.outcomes)
