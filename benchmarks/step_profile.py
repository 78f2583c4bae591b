"""Where a train step's time goes: a profiler trace of the real step, each XLA op's time
booked to the model code that made it, and the matmuls' own speed against the peak.

    python benchmarks/step_profile.py                          # 512x8 and 1024x8, default layout (RMSNorm, RoPE)
    python benchmarks/step_profile.py --layout nanodo          # LayerNorm, learned positions
    python benchmarks/step_profile.py --shapes 64x2 --steps 1  # seconds: a smoke test

For each shape it compiles the step exactly as step_throughput.py does, traces a few steps
with jax.profiler (its Perfetto JSON), and joins each traced op to the compiled HLO:
an op is a *matmul* when it is a dot or a fusion holding one, and is booked to the
innermost Python function of its source frames (RMSNorm.__call__, rope, attention_einsum,
optax's update, ...), grouped into the parts named in PARTS. A matmul's FLOPs come from its
HLO shapes (2 x output elements x contracted size), so the matmuls' own rate against the
matmul peak measured in the same run says how much of the gap is the matmuls themselves.
The step's time not covered by any op (dispatch, threads waiting) is reported as such.
Prints a table per shape and writes benchmarks/results/<host>-profile.json.
"""
from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import math
import platform
import re
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# part -> where its ops come from: the innermost function (without its <locals>), or a
# file path's tail; the first part that matches takes the op
PARTS = {
    'dense projections': ('Dense.__call__',),
    'output head': ('Embed.attend',),
    'norms': ('RMSNorm.__call__', 'LayerNorm.__call__', 'flax/nnx/nn/normalization.py'),
    'rope': ('rope',),
    'attention (scores, softmax, mix)': ('attention_einsum', 'max_attention_score', 'Attention._attend'),
    'mlp activation': ('MLP.__call__',),
    'residual adds': ('Block.__call__',),
    'cross-entropy': ('tasks.py', 'optax/losses/'),
    'embedding': ('embed_tokens',),
    'diagnostics': ('diagnostics.py',),
    'optimizer update': ('optax/', 'training/optim.py'),
}
MOVES = {'parameter', 'copy', 'transpose', 'bitcast', 'reshape', 'fusion', 'copy-start', 'copy-done'}  # data moved only


def parse_hlo(text: str) -> dict:
    """{instruction name: {opcode, matmul, flops, file, function}} from a compiled module's
    text (as_text(): instructions carry stack_frame_id into its FileNames/FunctionNames/
    FileLocations/StackFrames tables). A fusion's FLOPs are its dots'; one that XLA made
    without source information takes its dot's frame, else its first op's."""
    sections = collections.defaultdict(dict)
    section = None
    shapes = {}
    comp_flops = collections.Counter()
    comp_frame = {}
    comp_opcodes = collections.defaultdict(set)
    instrs = {}
    comp = None
    for line in text.splitlines():
        if line in ('FileNames', 'FunctionNames', 'FileLocations', 'StackFrames'):
            section = line
            continue
        if section and re.match(r'^\d+ ', line):
            key, _, rest = line.partition(' ')
            sections[section][int(key)] = rest
            continue
        section = None
        head = re.match(r'^(?:ENTRY )?%([\w.-]+) \(', line)
        if head and line.endswith('{'):
            comp = head.group(1)
            continue
        m = re.match(r'^\s*(?:ROOT )?%([\w.-]+) = (\S+?)(?:\{[\d,]*\})? ([\w-]+)\(', line)
        if not m:
            continue
        name, shape, opcode = m.groups()
        shapes[name] = shape
        calls = re.search(r'calls=%([\w.-]+)', line)
        frame = re.search(r'stack_frame_id=(\d+)', line)
        dot = dot_flops(line, shape, shapes) if opcode in ('dot', 'convolution') else 0
        comp_flops[comp] += dot
        comp_opcodes[comp].add(opcode)
        if frame and (dot or comp not in comp_frame):   # a computation's dot names it, else its first op
            comp_frame[comp] = int(frame.group(1))
        instrs[name] = (opcode, calls.group(1) if calls else None, int(frame.group(1)) if frame else None, dot)
    frames = {k: _ints(v) for k, v in sections['StackFrames'].items()}
    locations = {k: _ints(v) for k, v in sections['FileLocations'].items()}
    files = {k: v.strip('"') for k, v in sections['FileNames'].items()}
    functions = {k: v.strip('"') for k, v in sections['FunctionNames'].items()}

    def where(frame_id):
        if frame_id is None or frame_id not in frames:
            return ('', '')
        loc = locations[frames[frame_id]['file_location_id']]
        return files[loc['file_name_id']], functions[loc['function_name_id']]

    return {name: dict(opcode=op, matmul=bool(flops or comp_flops.get(calls)), flops=flops or comp_flops.get(calls, 0),
                       file=where(frame)[0], function=where(frame)[1],
                       moves_only=({op} | comp_opcodes.get(calls, set())) <= MOVES)
            for name, (op, calls, frame, flops) in instrs.items()
            for frame in [frame if frame is not None else comp_frame.get(calls)]}


def _ints(fields: str) -> dict:
    return {k: int(v) for k, v in re.findall(r'(\w+)=(\d+)', fields)}


def dot_flops(line: str, out_shape: str, shapes: dict) -> int:
    """2 x output elements x the contracted size (read from the left operand's shape)."""
    out = _dims(out_shape)
    lhs = re.search(r'\(%([\w.-]+)', line.split('=', 1)[1])
    contracting = re.search(r'lhs_contracting_dims=\{([\d,]*)\}', line)
    if not (lhs and contracting and lhs.group(1) in shapes):
        return 0
    lhs_dims = _dims(shapes[lhs.group(1)])
    return 2 * math.prod(out) * math.prod(lhs_dims[int(i)] for i in contracting.group(1).split(',') if i)


def _dims(shape: str) -> list[int]:
    m = re.search(r'\[([\d,]*)\]', shape)
    return [int(d) for d in m.group(1).split(',') if d] if m else []


def part_of(op: dict) -> str:
    """The part of the step an op belongs to (PARTS), by its innermost source frame."""
    function = op['function'].split('.<locals>')[0]
    for part, marks in PARTS.items():
        if any(function == m or ('/' in m or m.endswith('.py')) and op['file'].endswith(m) or
               m.endswith('/') and m in op['file'] for m in marks):
            return part
    if op['moves_only']:
        return 'layout copies'
    return 'other' if op['function'] else 'no source (made by XLA)'


def op_times(trace_dir: str, ops: dict) -> tuple[collections.Counter, float, int]:
    """Microseconds per HLO op name over the trace, the time ops ran, and how many ran.
    XLA:CPU runs independent ops on two threads at once: a stretch two ops share counts half
    to each, so the ops' times add up to the time ops ran. It also runs some dots
    asynchronously: their event ends when the work is handed to the thread pool (a 2-GFLOP
    dot "runs" in 60 us, a thousand times the peak), so a stretch in which no op runs, after
    a matmul's event ended, is that matmul's and is booked to it; after any other op it is
    time outside every op. Events named like no op are the executor's own."""
    path = glob.glob(f'{trace_dir}/plugins/profile/*/perfetto_trace.json.gz')[0]
    events = json.load(gzip.open(path))
    events = events['traceEvents'] if isinstance(events, dict) else events
    edges = []
    for i, e in enumerate(events):
        if e.get('ph') == 'X' and e.get('name') in ops:
            edges += [(e['ts'], 1, i, e['name']), (e['ts'] + e['dur'], -1, i, e['name'])]
    times, busy = collections.Counter(), 0.0
    active = {}
    last, last_ended = None, None
    for t, kind, i, name in sorted(edges):
        if last is not None and (active or ops[last_ended]['matmul']):
            for running in (active.values() if active else [last_ended]):
                times[running] += (t - last) / max(len(active), 1)
            busy += t - last
        last = t
        if kind == 1:
            active[i] = name
        else:
            active.pop(i, None)
            last_ended = name
    return times, busy, len(edges) // 2


def breakdown(ops: dict, times: collections.Counter, busy_us: float, steps: int, step_ms: float,
              peak: float) -> dict:
    """Milliseconds per step by (part, matmul or not), the matmuls' rate against `peak`,
    and the traced steps' time (`step_ms`, their wall clock) outside every op."""
    rows = collections.defaultdict(lambda: dict(ms=0.0, flops=0))
    for name, us in times.items():
        op = ops[name]
        row = rows[(part_of(op), 'matmul' if op['matmul'] else 'other')]
        row['ms'] += us / 1e3 / steps
        row['flops'] += op['flops']
    matmul_ms = sum(r['ms'] for (_, kind), r in rows.items() if kind == 'matmul')
    matmul_flops = sum(r['flops'] for r in rows.values())
    traced_ms = busy_us / 1e3 / steps
    return dict(step_ms=step_ms, traced_ms=traced_ms, untraced_ms=step_ms - traced_ms,
                matmul_ms=matmul_ms, matmul_flops=matmul_flops, matmul_ideal_ms=1e3 * matmul_flops / peak,
                matmul_rate_of_peak=matmul_flops / (matmul_ms / 1e3) / peak if matmul_ms else None,
                parts=sorted(({'part': part, 'kind': kind, **row} for (part, kind), row in rows.items()),
                             key=lambda r: -r['ms']))


def profile_shape(cfg, device, steps: int) -> dict:
    """The step timed untraced (median of `steps`, after two warm-up steps), then `steps`
    more traced and broken down; MFU and the matmuls' rate against the matmul peak measured
    just before and just after (the higher: a shared machine is not equally fast throughout)."""
    import jax
    from step_throughput import CompiledStep, measure_peak
    peaks = [measure_peak(device, 'float32')]
    compiled = CompiledStep(cfg, [device])
    row = compiled.timed(steps)
    with tempfile.TemporaryDirectory() as trace_dir:
        with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
            start = time.perf_counter()
            for _ in range(steps):
                compiled.step(timed=False)
            traced_step_ms = 1e3 * (time.perf_counter() - start) / steps
        ops = parse_hlo(compiled.train_fn.as_text())
        times, busy_us, executions = op_times(trace_dir, ops)
    peaks.append(measure_peak(device, 'float32'))
    peak = max(peaks)
    cost = compiled.train_fn.cost_analysis()   # XLA's own count: every op's FLOPs, not only the dots'
    row.update(xla_flops=cost['flops'], xla_transcendentals=cost['transcendentals'],
               xla_bytes_accessed=cost['bytes accessed'])
    row.update(peak_flops=peak, peak_measurements=peaks, mfu=row['achieved_flops'] / peak,
               profile=breakdown(ops, times, busy_us, steps, traced_step_ms, peak))
    row['gap'] = gap_to_peak(row['profile'], row['flops_per_step'], peak)
    row['profile']['ops_per_step'] = executions / steps
    return row


def gap_to_peak(prof: dict, model_flops: float, peak: float) -> dict:
    """The traced step's milliseconds, part by part: the model's FLOPs at the peak (MFU's
    numerator), the masked half of causal attention the dots compute anyway, the matmuls' time
    over their FLOPs at the peak, every other op, and the time outside any op. They add up."""
    other_ms = sum(r['ms'] for r in prof['parts'] if r['kind'] == 'other')
    return {'model_flops_at_peak_ms': 1e3 * model_flops / peak,
            'causal_masked_half_ms': 1e3 * (prof['matmul_flops'] - model_flops) / peak,
            'matmuls_below_peak_ms': prof['matmul_ms'] - prof['matmul_ideal_ms'],
            'other_ops_ms': other_ms, 'outside_any_op_ms': prof['untraced_ms']}


def print_profile(shape: str, row: dict) -> None:
    prof = row['profile']
    print(f'\n{shape} ({row["params"]:,} parameters): {row["step_ms"]:.0f} ms/step untraced, '
          f'MFU {100 * row["mfu"]:.1f}% of the matmul peak {row["peak_flops"] / 1e9:.1f} GFLOP/s; '
          f'matmuls {prof["matmul_ms"]:.0f} ms at {100 * prof["matmul_rate_of_peak"]:.1f}% of the peak '
          f'(ideal {prof["matmul_ideal_ms"]:.0f} ms); traced steps {prof["step_ms"]:.0f} ms, '
          f'{prof["untraced_ms"]:.0f} of them outside any op ({prof["ops_per_step"]:,.0f} ops ran a step)')
    print(f'FLOPs per step: the model\'s {row["flops_per_step"] / 1e9:.1f} G (MFU\'s), the dots\' '
          f'{prof["matmul_flops"] / 1e9:.1f} G (causal attention computed whole), every op\'s by XLA\'s cost '
          f'analysis {row["xla_flops"] / 1e9:.1f} G')
    print('the traced step, part by part: ' + ', '.join(
        f'{name.removesuffix("_ms").replace("_", " ")} {ms:.0f} ms ({100 * ms / prof["step_ms"]:.1f}%)'
        for name, ms in row['gap'].items()))
    print(f'{"part":34} {"kind":7} {"ms/step":>8} {"share":>6}')
    for r in prof['parts']:
        print(f'{r["part"]:34} {r["kind"]:7} {r["ms"]:8.1f} {100 * r["ms"] / prof["step_ms"]:5.1f}%')


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--shapes', default='512x8,1024x8', help='d_model x n_layers, comma separated')
    p.add_argument('--layout', default='default', choices=['default', 'nanodo'],
                   help="default: RMSNorm and RoPE (the model's defaults); nanodo: LayerNorm and learned positions")
    p.add_argument('--seq', type=int, default=256)
    p.add_argument('--batch', type=int, default=16)
    p.add_argument('--head-dim', type=int, default=64)
    p.add_argument('--steps', type=int, default=3, help='steps timed, then steps traced, per shape')
    p.add_argument('--out', default=None, help='JSON path (default benchmarks/results/<host>-profile.json)')
    args = p.parse_args()
    from step_throughput import check_shapes, shape_config
    check_shapes(p, args.shapes)
    args.dtype = 'float32'
    import jax
    from harness import write_result
    device = jax.devices()[0]
    layout = {} if args.layout == 'default' else dict(norm='layernorm', position='learned', max_len=args.seq)
    rows = {}
    for shape in args.shapes.split(','):
        d, n = map(int, shape.split('x'))
        rows[shape] = profile_shape(shape_config(d, n, args, **layout), device, args.steps)
        print_profile(shape, rows[shape])
    write_result(dict(host=platform.node(), platform=device.platform, jax=jax.__version__, layout=args.layout,
                      seq=args.seq, batch=args.batch, shapes=rows), args.out, '{host}-profile.json')


if __name__ == '__main__':
    main()
