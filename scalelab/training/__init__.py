"""One run, top to bottom: a config resolved into a plan, trained, logged and checkpointed.

config (keys, defaults, one-pass resolution and validation), plan (the resolved plan every
consumer takes), optim (optax optimizers and schedules), train (state, pure steps, the one
build sequence), loop (a run in a workdir), actions (what runs between steps), diagnostics
(norms, loss spikes), metrics (metrics.jsonl, curves, the step timer), writers (JSONL,
TensorBoard, W&B), translation_eval (a translation run's BLEU), plot (loss curves of runs),
mup (muP's coordinate check), recipes (config fragments experiments share), launch_local
(N processes on this machine).
"""
