"""Orbax checkpoints of the train state: async save, keep the last k, resume.

A checkpoint holds the state tree and a small JSON record (step, cumulative
wall time, topology). Restoring takes a target of ShapeDtypeStructs carrying
the current mesh's shardings, so a run can resume on a different mesh.
A save interrupted by a kill leaves a temporary directory that orbax
ignores, so resuming always starts from the last complete checkpoint.
"""
from __future__ import annotations

import os
from pathlib import Path

import jax
import orbax.checkpoint as ocp


class Checkpointer:
    def __init__(self, directory: str | Path, *, every_steps: int, keep: int, async_save: bool):
        self.directory = Path(directory).absolute()
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                save_interval_steps=every_steps,
                enable_async_checkpointing=async_save,
                preservation_policy=ocp.checkpoint_managers.LatestN(keep),
                cleanup_tmp_directories=True,
            ))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def should_save(self, step: int) -> bool:
        """Whether `save(step, ...)` would write a checkpoint (the step is on the interval)."""
        return self.manager.should_save(step)

    def save(self, step: int, state, record: dict, *, force: bool = False) -> bool:
        """Save if `step` is on the interval (or `force`); returns whether it saved."""
        return self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), record=ocp.args.JsonSave(record)), force=force)

    def restore(self, step: int, target) -> tuple[object, dict]:
        """State laid out as `target` (a tree of jax.ShapeDtypeStruct with shardings) and the record."""
        restored = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(target), record=ocp.args.JsonRestore()))
        return restored.state, dict(restored.record)

    def restore_newest(self, target, warn) -> tuple[int | None, tuple[object, dict] | None]:
        """(step, (state, record)) of the newest checkpoint that restores, or (None, None).

        One that fails (truncated, garbled, files missing) is moved, not deleted,
        to checkpoints.unreadable/<step> with a warning naming it, and the next
        older one is tried. With several processes a failure is raised as is:
        they would have to agree on which one to skip.
        """
        for step in sorted(self.manager.all_steps(), reverse=True):
            try:
                return step, self.restore(step, target)
            except Exception as e:  # orbax and tensorstore raise many kinds for damaged files
                if jax.process_count() > 1:
                    raise
                aside = self.directory.parent / f'{self.directory.name}.unreadable' / str(step)
                aside.parent.mkdir(exist_ok=True)
                os.replace(self.directory / str(step), aside)
                self.manager.reload()
                first_line = (str(e).strip().splitlines() or [''])[0][:200]
                warn(f'checkpoint {step} in {self.directory} cannot be restored ({type(e).__name__}: '
                     f'{first_line}); moved it to {aside} and trying the next older one')
        return None, None

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()


def abstract_target(shapes, shardings):
    """ShapeDtypeStructs carrying `shardings`, the form orbax restores into."""
    return jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes, shardings)
