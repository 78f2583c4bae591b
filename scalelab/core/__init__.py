"""The ground floor: what every other package stands on; nothing here imports from above.

errors (the exceptions a user sees, exit codes), files (atomic writes), cli (one flag
style, one-line errors), progress (bars or plain lines), runtime (JAX's process-wide
settings), workdir (a run's directory: lock, path checks, JSON), stop (signals as a flag),
distributed (multi-process start-up), parallel (mesh, logical axes, shardings),
checkpoint (orbax), naming (parameter names), weights (parameters to and from
safetensors and checkpoints), tasks (DataSpec; each task's loss and evaluation metrics).
"""
