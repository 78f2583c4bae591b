"""Tokenizers: bytes, HF tokenizer.json, tiktoken files (GPT-2's real BPE) and trained BPE."""
import numpy as np
import pytest

from scalelab.data import text, tokenizer
from tests.helpers import STDLIB_JSON, gpt2_tiktoken

SAMPLE = (text.stdlib_dir() / 'json' / 'decoder.py').read_text() + '\nünïcödé – 漢字 🙂\n'


@pytest.fixture(scope='module')
def gpt2():
    return tokenizer.load(str(gpt2_tiktoken()))


@pytest.fixture(scope='module')
def bpe():
    return tokenizer.train_bpe([p.read_text() for p in text.list_files(STDLIB_JSON, '*.py')], 400)


def test_gpt2_tiktoken_gives_gpt2s_published_ids(gpt2):
    # The ids OpenAI's GPT-2 encoder gives (the encoder.json of the gpt-2 repository).
    assert gpt2.encode('Hello world') == [15496, 995]
    assert gpt2.vocab_size == 50257 and gpt2.eos_id == 50256
    assert gpt2.decode(gpt2.encode(SAMPLE)) == SAMPLE


def test_tiktoken_as_hf_tokenizer_encodes_the_same(gpt2, tmp_path):
    """The export's tokenizer.json (merges recovered from the ranks) is the same tokenizer."""
    hf = tokenizer.from_hf(gpt2.to_hf(), 'converted')
    assert hf.encode(SAMPLE) == gpt2.encode(SAMPLE)
    assert hf.vocab_size == gpt2.vocab_size and hf.eos_id == gpt2.eos_id
    np.testing.assert_array_equal(hf.token_bytes(), gpt2.token_bytes())


def test_byte_tokenizer_and_its_hf_form(tmp_path):
    b = tokenizer.load('bytes')
    assert b.encode(SAMPLE) == list(SAMPLE.encode())
    hf = b.to_hf()
    assert hf.encode(SAMPLE).ids == b.encode(SAMPLE)
    assert hf.decode(b.encode(SAMPLE)) == SAMPLE


def test_trained_bpe_round_trips_and_counts_bytes_exactly(bpe):
    ids = bpe.encode(SAMPLE)
    assert bpe.vocab_size == 400 and max(ids) < 400
    assert len(ids) < len(SAMPLE.encode()) / 1.5  # merges learned from the json package
    assert bpe.decode(ids) == SAMPLE
    assert bpe.token_bytes()[ids].sum() == len(SAMPLE.encode())
    assert bpe.token_bytes()[bpe.eos_id] == 0


@pytest.mark.parametrize('which', ['bytes', 'bpe', 'gpt2'])
def test_save_and_load_keep_identity(which, tmp_path, bpe, gpt2):
    tok = {'bytes': tokenizer.byte_level(), 'bpe': bpe, 'gpt2': gpt2}[which]
    tok.save(tmp_path / 'tokenizer')
    for spec in (tmp_path, tmp_path / 'tokenizer'):  # a workdir, or its tokenizer directory
        loaded = tokenizer.load(str(spec))
        assert loaded.identity() == tok.identity()
        assert loaded.encode(SAMPLE) == tok.encode(SAMPLE)


def test_hf_tokenizer_json_from_a_directory_or_file(tmp_path, bpe):
    bpe.to_hf().save(str(tmp_path / 'tokenizer.json'))
    for spec in (tmp_path, tmp_path / 'tokenizer.json'):
        assert tokenizer.load(str(spec)).sha256 == bpe.sha256


def written(path, content):
    path.write_text(content)
    return str(path)


@pytest.mark.parametrize('make, expected', [
    (lambda d: str(d / 'nothing.json'), r"no such tokenizer; valid: 'bytes'"),
    (lambda d: str(d), r'a directory without tokenizer.json'),
    (lambda d: written(d / 'bad.json', '{"not": "a tokenizer"'), r'not a readable HF tokenizer.json'),
    (lambda d: written(d / 'bad.tiktoken', 'not base64 at all\n'), r'not a .tiktoken file'),
])
def test_bad_tokenizers_get_one_clear_error(tmp_path, make, expected):
    with pytest.raises(tokenizer.TokenizerError, match=expected):
        tokenizer.load(make(tmp_path))


def test_bpe_needs_room_for_bytes_and_separator():
    with pytest.raises(tokenizer.TokenizerError, match='at least 257'):
        tokenizer.train_bpe(['abc'], 100)
