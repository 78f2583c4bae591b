"""Step throughput and MFU of the Transformer LM at several shapes.

    python benchmarks/step_throughput.py                       # CPU: float32, 8 virtual devices for the DP row
    python benchmarks/step_throughput.py --dtype bfloat16 --shapes 768x12 --seq 1024 --batch 16   # one GPU
    python benchmarks/step_throughput.py --quick                # seconds: a smoke test
    python benchmarks/step_throughput.py --preset gpt2          # GPT-2 small (124M), bf16, seq 1024: one GPU
    python benchmarks/step_throughput.py --preset gpt2 --quick  # the same step at a CPU's size

For each shape (d_model x n_layers) it measures compile time (persistent cache
off), the median step time, tokens/s and MFU against the matmul peak measured
on the same machine in the same run (and the vendor peak, where known).
It also reports: compile time with scan_layers at 32 vs 4 layers, data
parallelism on all devices vs one, the training loop's overhead over the
bare step, and what the diagnostics (log.norms: per-layer-group norms of
params, grads and updates; log.noise_scale beside the same 4 microbatches without it)
cost the default model's step (lm_stdlib.py). Prints a table and writes benchmarks/results/<host>.json.
"""
from __future__ import annotations

import argparse
import json
import platform
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--shapes', default='128x4,256x4,512x8,1024x8', help='d_model x n_layers, comma separated')
    p.add_argument('--seq', type=int, default=256)
    p.add_argument('--batch', type=int, default=16)
    p.add_argument('--dtype', default=None, choices=['float32', 'bfloat16'],
                   help='compute dtype (default: float32; bfloat16 under --preset gpt2)')
    p.add_argument('--preset', default=None, choices=['gpt2'],
                   help='gpt2: time only GPT-2 small\'s step (124M with its 50,257-token vocabulary, seq 1024, '
                        'cuDNN attention on a GPU), against the measured and the vendor peak')
    p.add_argument('--head-dim', type=int, default=64)
    p.add_argument('--steps', type=int, default=10, help='timed steps per shape (after 2 warm-up steps)')
    p.add_argument('--cpu-devices', type=int, default=8, help='virtual CPU devices (CPU only)')
    p.add_argument('--dp-shape', default='512x8', help='shape timed on one device and on all (data parallel)')
    p.add_argument('--loop-shape', default='256x4', help='shape whose loop overhead is measured')
    p.add_argument('--scan-d-model', type=int, default=256)
    p.add_argument('--scan-layers', default='4,32', help='shallow,deep: the depths whose compile times are compared')
    p.add_argument('--diag-config', default='experiments/lm_stdlib.py',
                   help='the experiment whose step is timed with each log.norms mode')
    p.add_argument('--diagnostics-only', action='store_true',
                   help='time only the diagnostics modes (default out benchmarks/results/<host>-diagnostics.json)')
    p.add_argument('--meshes-only', action='store_true',
                   help='time only the default model\'s step on all devices under each of --meshes, in turn '
                        '(default out benchmarks/results/<host>-meshes.json)')
    p.add_argument('--meshes', default='8x1x1,4x1x2,2x2x2', help='data x fsdp x tensor, comma separated')
    p.add_argument('--quick', action='store_true', help='tiny shapes and few steps: checks the script runs')
    p.add_argument('--out', default=None, help='JSON path (default benchmarks/results/<host>.json)')
    args = p.parse_args()
    check_shapes(p, args.shapes)
    args.dtype = args.dtype or ('bfloat16' if args.preset else 'float32')
    if args.quick:
        args.shapes, args.dp_shape, args.loop_shape, args.seq, args.batch = '64x2', '64x2', '64x2', 64, 8
        args.steps, args.scan_d_model, args.scan_layers = 2, 64, '2,4'
    return args


def check_shapes(parser: argparse.ArgumentParser, shapes: str) -> None:
    """--shapes must be d_model x n_layers pairs such as 512x8, comma separated."""
    bad = [s for s in shapes.split(',') if not re.fullmatch(r'[1-9]\d*x[1-9]\d*', s)]
    if bad:
        parser.error(f'--shapes: {", ".join(map(repr, bad))} is not d_model x n_layers; valid: e.g. 512x8,1024x8')


def shape_config(d_model: int, n_layers: int, args, **model):
    from scalelab.training import config
    cfg = config.base_config('transformer')
    cfg.model.update(d_model=d_model, n_layers=n_layers, n_heads=max(1, d_model // args.head_dim), d_ff=0, **model)
    cfg.data.seq_len = args.seq
    cfg.train.update(global_batch=args.batch, steps=1000, compute_dtype=args.dtype)
    return cfg


def measure_peak(device, dtype: str) -> float:
    """The matmul peak of one device in FLOP/s, measured now (a GPU's needs a larger matrix)."""
    from scalelab.science import flops
    return flops.measure_matmul_flops(device, dtype, n=4096 if device.platform != 'cpu' else 2048)


def diag_experiment(args):
    """--diag-config's run config (its :tiny size under --quick)."""
    from scalelab.sweep import points
    return points.load_experiment(str(REPO / args.diag_config) + (':tiny' if args.quick else ''))


def gpt2_config(args):
    """GPT-2 small as the gpt2 recipe trains it, with GPT-2's vocabulary (124,439,808
    parameters), attention 'auto' (cuDNN's fused kernel on a GPU in 16-bit); --quick: the same
    layout at d_model 64, 2 layers, seq 64, which a CPU steps in a second."""
    from scalelab.training import recipes
    cfg = recipes.byte_lm('gpt2')
    cfg.model.vocab_size = 50257
    cfg.train.update(global_batch=args.batch, steps=1000, compute_dtype=args.dtype)
    if args.quick:
        cfg.model.update(d_model=64, n_layers=2, n_heads=2, max_len=64)
        cfg.data.seq_len = 64
    return cfg


def report_gpt2(args, devices) -> dict:
    """The preset's one row: GPT-2 small's step on one device, MFU against the matmul peak
    measured before and after it (the higher) and against the vendor's peak where known."""
    from scalelab.models import transformer
    from scalelab.science import flops
    device = devices[0]
    peaks = [measure_peak(device, args.dtype)]
    compiled = CompiledStep(gpt2_config(args), devices[:1])
    row = compiled.timed(args.steps)
    peaks.append(measure_peak(device, args.dtype))
    vendor = flops.device_peak_flops(device, args.dtype) if device.platform != 'cpu' else None
    row.update(preset='gpt2', dtype=args.dtype, seq=compiled.cfg.data.seq_len, batch=compiled.cfg.train.global_batch,
               attention=transformer.attention_impl(compiled.cfg.model.attention, compiled.cfg.train.compute_dtype),
               measured_peak_flops=max(peaks), peak_measurements=peaks,
               vendor_peak_flops=vendor, mfu=row['achieved_flops'] / max(peaks),
               mfu_vendor_peak=row['achieved_flops'] / vendor if vendor else None)
    print(f'GPT-2 preset on {device.device_kind} ({device.platform}): {row["params"]:,} parameters, {args.dtype}, '
          f'seq {row["seq"]}, batch {row["batch"]}, attention {row["attention"]}: {row["step_ms"]:.1f} ms/step, '
          f'{row["tokens_per_s"]:,.0f} tok/s, MFU {100 * row["mfu"]:.1f}% of the measured peak '
          f'({max(peaks) / 1e12:.2f} TFLOP/s)' + (f', {100 * row["mfu_vendor_peak"]:.1f}% of the vendor peak '
                                                 f'({vendor / 1e12:.0f} TFLOP/s)' if vendor else ''), flush=True)
    return row


class CompiledStep:
    """The real train step compiled for `devices`, with its state and one fixed batch."""

    def __init__(self, cfg, devices):
        import jax
        import numpy as np

        from scalelab.training import plan, train
        from scalelab.data import pipeline
        the_plan = plan.make(cfg, len(devices))
        self.cfg = cfg = the_plan.cfg
        self.devices = devices
        B, L = cfg.train.global_batch, cfg.data.seq_len
        vocab = cfg.model.vocab_size
        batch_np = {'inputs': np.random.default_rng(0).integers(0, vocab, (B, L), dtype=np.int32)}
        batch_np['targets'] = np.roll(batch_np['inputs'], -1, axis=1)
        built = train.build(the_plan, devices, {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in batch_np.items()})
        self.train_fn, self.compile_s = built.train_fn, built.compile_s
        self.state = jax.jit(built.prepared.init, out_shardings=built.prepared.shardings)()
        self.batch = pipeline.to_global(built.mesh, batch_np, B)
        self.tokens_per_step = B * L
        self.flops_per_step = the_plan.flops_per_step
        self.times = []

    def warm_up(self) -> None:
        """Two untimed steps: the first ones also allocate and settle the state's buffers."""
        self.step(timed=False)
        self.step(timed=False)

    def timed(self, steps: int) -> dict:
        """`steps` timed steps after the warm-up, and the result."""
        self.warm_up()
        for _ in range(steps):
            self.step()
        return self.result()

    def step(self, timed: bool = True) -> None:
        import jax
        start = time.perf_counter()
        self.state, metrics = self.train_fn(self.state, self.batch)
        jax.block_until_ready(metrics)
        if timed:
            self.times.append(time.perf_counter() - start)

    def result(self) -> dict:
        from scalelab.models import transformer
        step_s = statistics.median(self.times)
        params = transformer.param_counts(self.cfg.model)
        return dict(d_model=self.cfg.model.d_model, n_layers=self.cfg.model.n_layers, devices=len(self.devices),
                    mesh=dict(self.cfg.mesh), params=params['total'], non_embedding=params['non_embedding'],
                    compile_s=self.compile_s, step_ms=1e3 * step_s, tokens_per_s=self.tokens_per_step / step_s,
                    flops_per_step=self.flops_per_step, achieved_flops=self.flops_per_step / step_s)


def measure_step(cfg, devices, steps: int) -> dict:
    """Compile time and median step time (after two warm-up steps) on `devices`."""
    return CompiledStep(cfg, devices).timed(steps)


def measure_alternating(runs: list[CompiledStep], steps: int) -> list[dict]:
    """Steps of several programs taken in turn, so a drift in the machine's speed
    falls on all of them alike."""
    for run in runs:
        run.warm_up()
    for _ in range(steps):
        for run in runs:
            run.step()
    return [run.result() for run in runs]


def loop_overhead(cfg, steps: int, devices) -> dict:
    """Step time inside the full training loop (data, metrics, checkpoint scheduling)
    vs the bare step, measured alike: bare medians just before and after the loop
    (the machine's speed drifts), and the loop's median logging interval after the
    first (which, like the bare step's two warm-up steps, holds the first steps)."""
    from scalelab.training import loop
    log_every = 5
    intervals = max(3, -(-steps // log_every))
    before = measure_step(cfg.copy_and_resolve_references(), devices, steps)
    cfg.train.update(steps=log_every * (intervals + 1), log_every=log_every, eval_every=0)
    cfg.data.eval_tokens = cfg.data.seq_len
    cfg.checkpoint.update(every_steps=10 ** 6)
    with tempfile.TemporaryDirectory() as workdir:
        summary = loop.run(cfg, workdir, devices=devices)
        rows = [json.loads(line) for line in (Path(workdir) / 'metrics.jsonl').read_text().splitlines()]
    interval_ms = [1e3 * summary['tokens_per_step'] / r['throughput'] for r in rows if 'throughput' in r][1:]
    after = measure_step(cfg.copy_and_resolve_references(), devices, steps)
    bare_step_ms = (before['step_ms'] + after['step_ms']) / 2
    loop_step_ms = statistics.median(interval_ms)
    return {'bare_step_ms': bare_step_ms, 'bare_before_ms': before['step_ms'], 'bare_after_ms': after['step_ms'],
            'loop_step_ms': loop_step_ms, 'loop_interval_ms': interval_ms,
            'loop_mean_incl_first_interval_ms': 1e3 * summary['tokens_per_step'] / summary['tokens_per_s'],
            'overhead': loop_step_ms / bare_step_ms - 1}


def diagnostics_overhead(args, devices) -> dict:
    """The default experiment's step with log.norms none, global and groups (logit
    statistics off), and as it runs by default (groups and log.logit_stats), timed in
    turn (so the machine's drift falls on all alike): what the diagnostics cost."""
    # mode: (log.norms, log.logit_stats, train.microbatches, log.noise_scale)
    modes = {'none': ('none', False, 1, False), 'global': ('global', False, 1, False),
             'groups': ('groups', False, 1, False), 'default': ('groups', True, 1, False),
             'micro4': ('groups', True, 4, False), 'micro4_noise_scale': ('groups', True, 4, True)}
    configs = []
    for norms, logit_stats, microbatches, noise_scale in modes.values():
        cfg = diag_experiment(args)
        cfg.log.update(norms=norms, logit_stats=logit_stats, noise_scale=noise_scale)
        cfg.train.microbatches = microbatches
        configs.append(cfg)
    results = measure_alternating([CompiledStep(cfg, devices) for cfg in configs], args.steps)
    out = {'config': args.diag_config, 'd_model': results[0]['d_model'], 'n_layers': results[0]['n_layers'],
           **{f'{mode}_step_ms': r['step_ms'] for mode, r in zip(modes, results)}}
    for mode in ('global', 'groups', 'default', 'micro4'):
        out[f'{mode}_overhead'] = out[f'{mode}_step_ms'] / out['none_step_ms'] - 1
    out['noise_scale_overhead'] = out['micro4_noise_scale_step_ms'] / out['micro4_step_ms'] - 1  # beside micro4
    return out


def mesh_layouts(args, devices) -> list[dict]:
    """The default experiment's step (--diag-config) on all devices under each mesh, timed in
    turn: what tensor parallelism costs beside data parallelism at the same device count."""
    configs = []
    for mesh in args.meshes.split(','):
        cfg = diag_experiment(args)
        cfg.mesh.update(dict(zip(('data', 'fsdp', 'tensor'), map(int, mesh.split('x')))))
        configs.append(cfg)
    rows = measure_alternating([CompiledStep(cfg, devices) for cfg in configs], args.steps)
    for mesh, row in zip(args.meshes.split(','), rows):
        print(f'{args.diag_config} on {len(devices)} devices, mesh {mesh} (data x fsdp x tensor): '
              f'{row["step_ms"]:.1f} ms/step', flush=True)
    return rows


def report_diagnostics(args, devices) -> dict:
    diag = diagnostics_overhead(args, devices)
    print(f'diagnostics at {diag["config"]} ({diag["d_model"]}x{diag["n_layers"]}): step '
          f'{diag["none_step_ms"]:.1f} ms without norms, global {100 * diag["global_overhead"]:+.2f}%, '
          f'per layer group {100 * diag["groups_overhead"]:+.2f}%, and with the logit statistics (the default) '
          f'{100 * diag["default_overhead"]:+.2f}%; the gradient noise scale over 4 microbatches '
          f'{100 * diag["noise_scale_overhead"]:+.2f}% beside 4 microbatches without it', flush=True)
    return diag


def main():
    args = parse_args()
    import jax
    jax.config.update('jax_num_cpu_devices', args.cpu_devices)
    jax.config.update('jax_enable_compilation_cache', False)  # measure real compile times
    from absl import logging
    logging.set_verbosity(logging.WARNING)

    from harness import write_result
    from scalelab.science import flops
    devices = jax.devices()
    device = devices[0]
    if args.preset == 'gpt2':
        row = report_gpt2(args, devices)
        write_result(dict(host=platform.node(), platform=device.platform, device_kind=device.device_kind,
                          jax=jax.__version__, gpt2=row), args.out, '{host}-gpt2.json')
        return
    if args.meshes_only:
        rows = mesh_layouts(args, devices)
        write_result(dict(host=platform.node(), platform=device.platform, jax=jax.__version__, meshes=rows),
                     args.out, '{host}-meshes.json')
        return
    if args.diagnostics_only:
        diag = report_diagnostics(args, devices[:1])
        write_result(dict(host=platform.node(), platform=device.platform, jax=jax.__version__, diagnostics=diag),
                     args.out, '{host}-diagnostics.json')
        return
    # The peak is measured at the start and again at the end, and the higher one is
    # used: a machine shared with other work (a VM) is not equally fast all run long.
    peaks = [measure_peak(device, args.dtype)]
    vendor_peak = flops.device_peak_flops(device, args.dtype) if device.platform != 'cpu' else None

    def mfu(row, peak):
        """Against the measured peak; CPU devices of one process share its cores, so count them once."""
        return row['achieved_flops'] / (peak * (row['devices'] if device.platform != 'cpu' else 1))

    rows = []
    for shape in args.shapes.split(','):
        d, n = map(int, shape.split('x'))
        row = measure_step(shape_config(d, n, args), devices[:1], args.steps)
        rows.append(row)
        print(f'{shape}: {row["step_ms"]:.1f} ms/step, {row["tokens_per_s"]:,.0f} tok/s, '
              f'MFU {100 * mfu(row, peaks[0]):.1f}% of the first peak measurement, compile {row["compile_s"]:.1f}s',
              flush=True)

    d, n = map(int, args.dp_shape.split('x'))
    one, everyone = measure_alternating([CompiledStep(shape_config(d, n, args), devices[:1]),
                                         CompiledStep(shape_config(d, n, args), devices)], args.steps)
    dp = {'one_device': one, 'all_devices': everyone, 'speedup': one['step_ms'] / everyone['step_ms']}
    print(f'data parallel {args.dp_shape}: 1 device {dp["one_device"]["step_ms"]:.1f} ms, '
          f'{len(devices)} devices {dp["all_devices"]["step_ms"]:.1f} ms (x{dp["speedup"]:.2f})', flush=True)

    shallow, deep = map(int, args.scan_layers.split(','))
    scan = {'shallow_layers': shallow, 'deep_layers': deep}
    for layers in (shallow, deep):
        for scanned in (True, False):
            cfg = shape_config(args.scan_d_model, layers, args, scan_layers=scanned)
            scan[f'{"scan" if scanned else "loop"}_{layers}'] = measure_step(cfg, devices[:1], 1)['compile_s']
    scan['scan_ratio'] = scan[f'scan_{deep}'] / scan[f'scan_{shallow}']
    scan['loop_ratio'] = scan[f'loop_{deep}'] / scan[f'loop_{shallow}']
    print(f'compile time {deep} vs {shallow} layers: scan x{scan["scan_ratio"]:.2f} '
          f'({scan[f"scan_{shallow}"]:.1f}s -> {scan[f"scan_{deep}"]:.1f}s), loop x{scan["loop_ratio"]:.2f} '
          f'({scan[f"loop_{shallow}"]:.1f}s -> {scan[f"loop_{deep}"]:.1f}s)', flush=True)

    d, n = map(int, args.loop_shape.split('x'))
    overhead = loop_overhead(shape_config(d, n, args), max(args.steps, 10), devices[:1])
    print(f'loop overhead at {args.loop_shape}: {100 * overhead["overhead"]:+.1f}% '
          f'({overhead["bare_step_ms"]:.1f} -> {overhead["loop_step_ms"]:.1f} ms/step)', flush=True)

    diag = report_diagnostics(args, devices[:1])

    peaks.append(measure_peak(device, args.dtype))
    measured_peak = max(peaks)
    for row in [*rows, dp['one_device'], dp['all_devices']]:
        row['mfu'] = mfu(row, measured_peak)
        if vendor_peak:
            row['mfu_vendor_peak'] = row['achieved_flops'] / (vendor_peak * row['devices'])
    result = dict(host=platform.node(), platform=device.platform, device_kind=device.device_kind,
                  num_devices=len(devices), jax=jax.__version__, dtype=args.dtype, seq=args.seq, batch=args.batch,
                  measured_peak_flops=measured_peak, peak_measurements=peaks, vendor_peak_flops=vendor_peak,
                  shapes=rows,
                  data_parallel=dp, compile_time=scan, loop_overhead=overhead, diagnostics=diag)
    print()
    print(f'{device.device_kind} ({device.platform}), {args.dtype}, seq {args.seq}, batch {args.batch}; '
          f'measured matmul peak {measured_peak / 1e9:,.1f} GFLOP/s (the higher of '
          f'{" and ".join(f"{p / 1e9:,.1f}" for p in peaks)}, at the start and the end)')
    print(f'{"shape":>9} {"params":>12} {"compile s":>9} {"ms/step":>9} {"tok/s":>10} {"GFLOP/s":>9} {"MFU":>6}')
    for r in rows:
        print(f'{r["d_model"]:>5}x{r["n_layers"]:<3} {r["params"]:>12,} {r["compile_s"]:>9.1f} {r["step_ms"]:>9.1f} '
              f'{r["tokens_per_s"]:>10,.0f} {r["achieved_flops"] / 1e9:>9.1f} {100 * r["mfu"]:>5.1f}%')
    write_result(result, args.out, '{host}.json')


if __name__ == '__main__':
    main()
