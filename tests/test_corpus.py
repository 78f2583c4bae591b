"""Prepared corpora: shards hold exactly the tokenized documents, reading is lazy and
deterministic, the evaluation set is fixed, and bad input gets one clear error."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from scalelab.core.errors import ConfigError
from scalelab.data import corpus, prepare, text, tokenizer, windows
from scalelab.training import config, loop
from scalelab import data as data_lib
from tests.helpers import REPO, STDLIB_JSON, tiny_lm

JSON_FILES = text.list_files(STDLIB_JSON, '*.py')


@pytest.fixture(scope='module')
def bpe_corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp('bpe')
    prepare.prepare([STDLIB_JSON], 'bpe', out, pattern='*.py', vocab_size=400, eval_fraction=0.2,
                    shard_tokens=3000, log=lambda *_: None)
    return out


def corpus_cfg(path, **overrides):
    cfg = tiny_lm()
    cfg.data = data_lib.default_config('corpus')
    cfg.data.update(path=str(path), seq_len=32, eval_tokens=1024)
    cfg.model.vocab_size = 0
    for key, value in overrides.items():
        section, name = key.split('.')
        cfg[section][name] = value
    return cfg


def shard_tokens(directory, split):
    meta = corpus.read_meta(directory)
    return np.concatenate([np.memmap(directory / s['file'], meta['dtype'], mode='r')
                           for s in meta['splits'][split]['shards']])


def test_shards_hold_each_document_then_the_separator(bpe_corpus):
    meta = corpus.read_meta(bpe_corpus)
    tok = tokenizer.load(str(bpe_corpus))
    assert meta['dtype'] == 'uint16' and tok.identity() == meta['tokenizer']
    train_files, eval_files = text.split_files(JSON_FILES, 0.2)  # the byte-level run's split
    for split, files in (('train', train_files), ('validation', eval_files)):
        expected = np.concatenate([tok.encode(p.read_text()) + [tok.eos_id] for p in files])
        np.testing.assert_array_equal(shard_tokens(bpe_corpus, split), expected)
        assert meta['splits'][split]['bytes'] == sum(len(p.read_text().encode()) for p in files)
    assert len(meta['splits']['train']['shards']) == -(-meta['splits']['train']['tokens'] // 3000)


def test_byte_corpus_is_the_files_bytes(tmp_path):
    prepare.prepare([STDLIB_JSON], 'bytes', tmp_path, pattern='*.py', eval_fraction=0.2, log=lambda *_: None)
    train_files, _ = text.split_files(JSON_FILES, 0.2)
    assert bytes(shard_tokens(tmp_path, 'train').astype(np.uint8)) == b''.join(p.read_bytes() for p in train_files)


def test_vocabulary_decides_the_token_width():
    assert corpus.token_dtype(50257) == np.uint16 and corpus.token_dtype(65536) == np.uint16
    assert corpus.token_dtype(65537) == np.uint32


def test_records_from_jsonl_and_parquet_with_empty_ones_skipped(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    docs = [f'document number {i}: ' + 'word ' * (i % 7) for i in range(200)] + ['', '']
    (tmp_path / 'a.jsonl').write_text(''.join(json.dumps({'body': d, 'id': i}) + '\n' for i, d in enumerate(docs)))
    pq.write_table(pa.table({'body': docs}), tmp_path / 'a.parquet')
    metas = [prepare.prepare([str(tmp_path / name)], 'bytes', tmp_path / name.replace('.', '_'),
                             text_field='body', eval_fraction=0.1, log=lambda *_: None)
             for name in ('a.jsonl', 'a.parquet')]
    for meta, name in zip(metas, ('a_jsonl', 'a_parquet')):
        splits = meta['splits']
        assert splits['train']['documents'] + splits['validation']['documents'] == 200
        assert splits['train']['empty_documents_skipped'] + splits['validation']['empty_documents_skipped'] == 2
        together = bytes(np.concatenate([shard_tokens(tmp_path / name, s) for s in corpus.SPLITS]).astype(np.uint8))
        assert sorted(together.decode().replace('document number', '\0document number').split('\0')[1:]) == \
            sorted(d for d in docs if d)
    assert metas[0]['splits'] == metas[1]['splits']  # the split depends on the text alone
    with pytest.raises(prepare.PrepareError, match=r"--text-field='text': no such field .* its fields: body, id"):
        prepare.prepare([str(tmp_path / 'a.jsonl')], 'bytes', tmp_path / 'x', log=lambda *_: None)


def test_rerun_is_a_no_op_and_other_input_is_refused(tmp_path):
    said = []
    prepare.prepare([STDLIB_JSON], 'bytes', tmp_path, pattern='*.py', log=said.append)
    stamps = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    prepare.prepare([STDLIB_JSON], 'bytes', tmp_path, pattern='*.py', log=said.append)
    assert 'nothing to do' in said[-1]
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == stamps
    with pytest.raises(prepare.PrepareError, match='pass --overwrite to replace it'):
        prepare.prepare([STDLIB_JSON], 'bytes', tmp_path, pattern='*.py', eval_fraction=0.4, log=said.append)


def test_a_killed_or_failed_overwrite_leaves_the_old_corpus_whole(tmp_path, monkeypatch):
    out = tmp_path / 'c'
    prepare.prepare([STDLIB_JSON], 'bytes', out, pattern='*.py', log=lambda *_: None)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    finished = []
    original = prepare.ShardWriter._finish

    def die_after_two(self):
        if len(finished) == 2:
            raise KeyboardInterrupt  # as a kill would stop it, between two shards
        finished.append(self.shards[-1]['file'])
        original(self)

    monkeypatch.setattr(prepare.ShardWriter, '_finish', die_after_two)
    with pytest.raises(KeyboardInterrupt):
        prepare.prepare([STDLIB_JSON], 'bytes', out, pattern='*.py', shard_tokens=4000, overwrite=True,
                        log=lambda *_: None)
    monkeypatch.setattr(prepare.ShardWriter, '_finish', original)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    assert [p.name for p in tmp_path.iterdir()] == ['c']  # no staging directory left behind
    config.resolve(corpus_cfg(out), 8)  # training still accepts the old corpus
    # a new input that fails its checks (every file binary) leaves it too
    (tmp_path / 'bin').mkdir()
    for i in range(2):
        (tmp_path / 'bin' / f'{i}.py').write_bytes(b'\x00\x01binary')
    with pytest.raises(prepare.PrepareError, match='every file is binary'):
        prepare.prepare([str(tmp_path / 'bin')], 'bytes', out, pattern='*.py', overwrite=True, log=lambda *_: None)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    prepare.prepare([STDLIB_JSON], 'bytes', out, pattern='*.py', shard_tokens=4000, overwrite=True,
                    log=lambda *_: None)
    assert corpus.read_meta(out)['splits']['train']['shards'][0]['tokens'] == 4000
    assert not corpus.shard_problems(out, corpus.read_meta(out))


def test_undecodable_and_binary_files_are_counted_named_and_bytes_kept_exactly(tmp_path):
    src = tmp_path / 'src'
    src.mkdir()
    latin1 = 'café déjà vu\n'.encode('latin-1') * 40          # 3 undecodable bytes a line in UTF-8
    (src / 'a.txt').write_bytes(latin1)
    (src / 'b.txt').write_bytes(b'plain ascii text\n' * 40)
    (src / 'c.txt').write_bytes(b'also fine \xef\xbf\xbd here\n' * 40)  # a real U+FFFD is not counted
    (src / 'd.txt').write_bytes(b'ELF\x00\x00\x01 not text')
    said = []
    meta = prepare.prepare([str(src)], 'bytes', tmp_path / 'bytes', eval_fraction=0.34, log=said.append)
    raw = b''.join((src / name).read_bytes() for name in ('a.txt', 'b.txt', 'c.txt'))
    held = np.concatenate([shard_tokens(tmp_path / 'bytes', split) for split in ('train', 'validation')])
    assert sorted(held.tolist()) == sorted(raw)  # every byte kept, none replaced (the split reorders files)
    assert meta['input']['files'] == 3
    assert any(line.startswith('warning: skipped 1 binary file (NUL bytes, not text): ') and line.endswith('d.txt')
               for line in said)
    said.clear()
    meta = prepare.prepare([str(src)], 'bpe', tmp_path / 'bpe', vocab_size=300, eval_fraction=0.34, log=said.append)
    replaced = {k: v for split in meta['splits'].values() for k, v in split['replaced_characters'].items()}
    assert replaced == {str(src / 'a.txt'): 3 * 40}
    warning = [line for line in said if 'could not be decoded as utf-8' in line]
    assert warning == [f'warning: 120 characters in 1 file could not be decoded as utf-8 and became U+FFFD: '
                       f'{src / "a.txt"} (120); --encoding names another']
    said.clear()
    meta = prepare.prepare([str(src)], 'bpe', tmp_path / 'latin', vocab_size=300, eval_fraction=0.34,
                           encoding='latin-1', log=said.append)
    assert not any(split['replaced_characters'] for split in meta['splits'].values())
    assert meta['input']['encoding'] == 'latin-1'


def test_skipped_directories_are_reported_and_can_be_kept(tmp_path):
    src = tmp_path / 'src'
    (src / 'site-packages' / 'pkg').mkdir(parents=True)
    for i in range(3):
        (src / 'site-packages' / 'pkg' / f'{i}.py').write_text(f'x = {i}\n' * 50)
    done = subprocess.run([sys.executable, '-m', 'scalelab.data.prepare', '--input', str(src), '--pattern', '*.py',
                           '--tokenizer', 'bytes', '--out', str(tmp_path / 'out')], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stdout.strip() == f'skipped 3 files under site-packages/ in {src} (--skip-dirs; --skip-dirs= keeps them)'
    assert done.stderr.strip() == (f"error: --input {str(src)!r} (a directory searched for --pattern='*.py'): matches "
                                   'no file; 3 matching files lie under site-packages, which --skip-dirs leaves out')
    kept = prepare.prepare([str(src)], 'bytes', tmp_path / 'kept', pattern='*.py', skip_dirs=(), log=lambda *_: None)
    assert kept['input']['files'] == 3


@pytest.mark.parametrize('args, expected', [
    (['--out', '{file}'], 'error: --out {file}: is a file, not a directory; choose another --out'),
    (['--out', '{file}/sub'], 'error: --out {file}/sub: is under {file}, which is a file; choose another --out'),
    (['--tokenizer', 'bpe', '--vocab-size', '-5'],
     'error: --vocab-size=-5: a byte-level BPE needs at least 257 ids (256 bytes and <|endoftext|>)'),
    (['--encoding', 'klingon'], "error: --encoding='klingon': not a codec Python knows (e.g. utf-8, latin-1, cp1252)"),
])
def test_bad_prepare_options_are_one_line_exit_2_and_write_nothing(tmp_path, args, expected):
    (tmp_path / 'file').write_text('x')
    values = {'file': str(tmp_path / 'file')}
    argv = ['--input', STDLIB_JSON, '--pattern', '*.py', '--tokenizer', 'bytes', '--out', str(tmp_path / 'out')]
    for i, arg in enumerate(args):
        argv += [arg.format(**values)] if i % 2 else [arg]
    done = subprocess.run([sys.executable, '-m', 'scalelab.data.prepare', *argv], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.strip() == expected.format(**values)
    assert sorted(p.name for p in tmp_path.iterdir()) == ['file']


def test_a_vocabulary_the_text_cannot_fill_is_named_by_what_it_is(tmp_path):
    said = []
    meta = prepare.prepare([STDLIB_JSON], 'bpe', tmp_path / 'c', pattern='*.py', vocab_size=70000, log=said.append)
    got = meta['tokenizer']['vocab_size']
    assert got < 70000 and meta['tokenizer']['name'] == f'bpe-{got}'
    assert f"warning: --vocab-size=70000, but the training text supports only {got:,} ids; the tokenizer is named " \
           f"'bpe-{got}'" in said


@pytest.mark.parametrize('damage, expected', [
    (lambda f: f.write_bytes(f.read_bytes()[:-10]), r'train-00000.bin: \d+ bytes, but meta.json says'),
    (lambda f: f.write_bytes(b''), r'train-00000.bin: 0 bytes, but meta.json says'),
    (lambda f: f.unlink(), r'train-00000.bin: missing'),
])
def test_damaged_shards_are_refused_before_compiling(bpe_corpus, tmp_path, damage, expected):
    import shutil
    copy = tmp_path / 'copy'
    shutil.copytree(bpe_corpus, copy)
    damage(copy / 'train-00000.bin')
    with pytest.raises(ConfigError, match=expected):
        loop.run(corpus_cfg(copy), tmp_path / 'run')
    assert not (tmp_path / 'run').exists()


def test_corrupt_metadata_is_named(bpe_corpus, tmp_path):
    import shutil
    shutil.copytree(bpe_corpus, tmp_path / 'c')
    (tmp_path / 'c' / 'meta.json').write_text('{"format": ')
    with pytest.raises(ConfigError, match=r'meta.json: corrupt'):
        config.resolve(corpus_cfg(tmp_path / 'c'), 8)


def test_another_tokenizer_than_the_corpus_was_prepared_with_is_refused(bpe_corpus):
    problems = pytest.raises(ConfigError, config.resolve, corpus_cfg(bpe_corpus, **{'data.tokenizer': 'bytes'}), 8)
    message = str(problems.value)
    assert "data.tokenizer='bytes' (bytes 'bytes', 256 ids" in message
    assert "is not the tokenizer data.path=" in message and "(hf 'bpe-400', 400 ids" in message
    config.resolve(corpus_cfg(bpe_corpus, **{'data.tokenizer': str(bpe_corpus / 'tokenizer')}), 8)  # its own: fine


def test_vocab_size_comes_from_the_tokenizer_and_a_smaller_model_is_refused(bpe_corpus):
    assert config.resolve(corpus_cfg(bpe_corpus), 8).model.vocab_size == 400
    assert config.resolve(corpus_cfg(bpe_corpus, **{'model.vocab_size': 512}), 8).model.vocab_size == 512
    with pytest.raises(ConfigError, match=r"model.vocab_size=256 \(the model\) is smaller than the 400 ids of the "
                                          r"tokenizer of data.path="):
        config.resolve(corpus_cfg(bpe_corpus, **{'model.vocab_size': 256}), 8)


def test_input_that_matches_nothing_is_one_line_and_exit_2(tmp_path):
    done = subprocess.run([sys.executable, '-m', 'scalelab.data.prepare', '--input', str(tmp_path / '*.txt'),
                           '--tokenizer', 'bytes', '--out', str(tmp_path / 'out')], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip() == f"error: --input {str(tmp_path / '*.txt')!r}: matches no file"
    assert not (tmp_path / 'out').exists()


def test_windows_are_pure_in_seed_and_step_and_stay_inside_a_shard(bpe_corpus):
    source = data_lib.load(corpus_cfg(bpe_corpus).data, global_batch=16, seed=3)
    a, b = source.train_batch(7, slice(0, 16)), source.train_batch(7, slice(0, 16))
    np.testing.assert_array_equal(a['inputs'], b['inputs'])
    assert not np.array_equal(a['inputs'], source.train_batch(8, slice(0, 16))['inputs'])
    np.testing.assert_array_equal(source.train_batch(7, slice(4, 8))['targets'], a['targets'][4:8])
    np.testing.assert_array_equal(a['inputs'][:, 1:], a['targets'][:, :-1])
    meta = corpus.read_meta(bpe_corpus)
    shards = [np.memmap(bpe_corpus / s['file'], meta['dtype'], mode='r').tobytes()
              for s in meta['splits']['train']['shards']]
    for step in range(20):
        batch = source.train_batch(step, slice(0, 16))
        windows_BxL1 = np.concatenate([batch['inputs'], batch['targets'][:, -1:]], axis=1).astype(np.uint16)
        for row in windows_BxL1:  # every window is a run of one shard's tokens
            assert any(row.tobytes() in shard and (shard.index(row.tobytes()) % 2 == 0) for shard in shards)


def eval_tokens_of(source):
    batches = [source.eval_batch(i, slice(0, source.global_batch)) for i in range(source.eval_batches())]
    key = 'targets' if 'targets' in batches[0] and batches[0]['targets'].ndim == 2 else 'inputs'
    rows = [(b[key], b['weights'] if 'weights' in b else np.ones(len(b[key]))) for b in batches]
    return np.concatenate([x[w.reshape(len(w), -1)[:, 0] > 0].reshape(-1) for x, w in rows])


@pytest.mark.parametrize('name', ['text', 'corpus', 'images', 'teacher'])
def test_evaluation_examples_do_not_depend_on_seed_or_batch(name, bpe_corpus):
    cfg = {'text': tiny_lm().data, 'corpus': corpus_cfg(bpe_corpus).data}.get(name) or data_lib.default_config(name)
    if name == 'images':
        cfg.dataset = 'digits'
    if name == 'teacher':
        cfg.eval_examples = 100
    reference = eval_tokens_of(data_lib.load(cfg, global_batch=16, seed=0))
    for batch, seed in ((16, 1), (8, 0), (32, 5)):
        np.testing.assert_array_equal(eval_tokens_of(data_lib.load(cfg, global_batch=batch, seed=seed)), reference)
    if name in ('text', 'corpus'):  # contiguous windows from the start of the held-out split, to the budget
        source = data_lib.load(cfg, global_batch=16, seed=0)
        assert reference.size == cfg.eval_tokens
        np.testing.assert_array_equal(reference, source.eval.read(np.array([0]), reference.size + 1)[0, 1:])


def test_bits_per_byte_use_the_evaluation_tokens_own_bytes(bpe_corpus):
    source = data_lib.load(corpus_cfg(bpe_corpus, **{'data.eval_tokens': 10 ** 6}).data, global_batch=16, seed=0)
    tok = tokenizer.load(str(bpe_corpus))
    targets = source.eval_targets().reshape(-1)
    pieces = [tok.decode([t]) for t in targets if t != tok.eos_id]  # an independent count: decode each token
    assert source.bytes_per_token == pytest.approx(sum(len(p.encode()) for p in pieces) / targets.size)


def test_training_on_a_corpus_reports_tokens_and_epochs(bpe_corpus, tmp_path):
    summary = loop.run(corpus_cfg(bpe_corpus, **{'train.steps': 6}), tmp_path)
    train_tokens = corpus.read_meta(bpe_corpus)['splits']['train']['tokens']
    assert summary['tokens'] == 6 * 16 * 32
    assert summary['epochs'] == pytest.approx(6 * 16 * 32 / train_tokens)
    assert summary['data']['train_tokens'] == train_tokens
    assert tokenizer.load(str(tmp_path)).sha256 == corpus.read_meta(bpe_corpus)['tokenizer']['sha256']
    assert 0 < summary['eval_bits_per_byte'] < summary['eval_loss'] / np.log(2)  # > 1 byte per token


@pytest.mark.slow
def test_resident_memory_stays_flat_on_a_corpus_larger_than_the_budget(tmp_path):
    """256 MiB of shards read through 2,500 random batches (312 MiB of windows): the
    reading process must grow by less than 48 MB, a budget far below the corpus."""
    tokens = 128 * 2 ** 20
    script = textwrap.dedent(f'''
        import json, os, numpy as np
        from pathlib import Path
        from scalelab.data import corpus
        root = Path({str(tmp_path)!r})
        chunk = (np.arange(2 ** 24) % 256).astype(np.uint16)
        with open(root / 'train-00000.bin', 'wb') as f:
            for _ in range({tokens} // chunk.size):
                f.write(chunk.tobytes())
        (root / 'validation-00000.bin').write_bytes(chunk[:4096].tobytes())
        from scalelab.data import tokenizer
        tokenizer.byte_level().save(root / 'tokenizer')
        meta = dict(format=corpus.FORMAT, tokenizer=tokenizer.byte_level().identity(), dtype='uint16',
                    splits=dict(train=dict(tokens={tokens}, documents=1, bytes={tokens},
                                           shards=[dict(file='train-00000.bin', tokens={tokens})]),
                                validation=dict(tokens=4096, documents=1, bytes=4096,
                                                shards=[dict(file='validation-00000.bin', tokens=4096)])))
        (root / 'meta.json').write_text(json.dumps(meta))
        def rss_mb():
            return int(next(l for l in open('/proc/self/status') if l.startswith('VmRSS')).split()[1]) / 1024
        from ml_collections import ConfigDict
        cfg = ConfigDict(dict(corpus.default_config(), path=str(root), seq_len=1024, eval_tokens=2048))
        source = corpus.load(cfg, 64, seed=0)
        source.train_batch(0, slice(0, 64))
        before = rss_mb()
        total = 0
        for step in range(2500):
            batch = source.train_batch(step, slice(0, 64))
            total += batch['inputs'].nbytes
            assert ((batch['targets'] - batch['inputs']) % 256 == 1).all()  # the file's own counting pattern
        print(json.dumps(dict(grew_mb=rss_mb() - before, read_mb=total / 2 ** 20 / 2)))
    ''')
    done = subprocess.run([sys.executable, '-c', script], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    corpus_mb = tokens * 2 / 2 ** 20
    assert corpus_mb > 48 * 5 and result['read_mb'] > corpus_mb  # the data read exceeds the corpus
    assert result['grew_mb'] < 48, result
    print(result)


def test_stream_reads_match_an_in_memory_array(tmp_path):
    """ShardStream maps window starts across files exactly as a per-file slice would."""
    sizes = [50, 7, 120]
    arrays = [np.arange(i * 1000, i * 1000 + n, dtype=np.uint32) for i, n in enumerate(sizes)]
    paths = []
    for i, a in enumerate(arrays):
        paths.append(tmp_path / f's{i}.bin')
        a.tofile(paths[-1])
    stream = windows.ShardStream(paths, sizes, np.uint32)
    length = 10
    expected = [a[s:s + length] for a in arrays for s in range(a.size - length + 1)]
    assert stream.n_starts(length) == len(expected)
    np.testing.assert_array_equal(stream.read(np.arange(len(expected)), length), np.stack(expected))
    assert os.path.getsize(paths[0]) == 50 * 4


def test_eval_bits_per_byte_are_nats_per_token_over_ln2_over_bytes_per_token():
    """By hand: 70 nats over 40 tokens of 2.5 bytes each is 1.75 nats per token and
    70 / ln 2 / 100 bits per byte."""
    from scalelab.core import tasks
    metrics = tasks.summarize('lm', {'loss_sum': 70.0, 'count': 40.0}, bytes_per_token=2.5)
    assert metrics['eval_loss'] == 1.75
    assert metrics['eval_bits_per_byte'] == pytest.approx(70.0 / np.log(2) / 100.0, rel=1e-12)
