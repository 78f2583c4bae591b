"""Greedy and beam search on a model small enough to enumerate: a Markov model whose next-token
scores depend on the source, the position, the last token and the sum of every token so far (mod 3)
(kept in its cache, so a beam that reorders hypotheses must reorder the cache with them).
Checked against exhaustive search and step-by-step argmax in NumPy; seconds, not minutes."""
import itertools
import math

import jax.numpy as jnp
import numpy as np
import pytest

from scalelab.models import decoding

V, MAX_LEN = 5, 5
PAD, END = decoding.PAD, decoding.END
RNG = np.random.default_rng(7)
BY_LAST = RNG.normal(0, 1.5, (V, V))
BY_POSITION = RNG.normal(0, 1.0, (MAX_LEN, V))
BY_HISTORY = RNG.normal(0, 2.0, (3, V))
BY_SOURCE = RNG.normal(0, 1.5, (V, V))
BY_POSITION[:3, END] -= 1.5  # sentences of a few words, so hypotheses of several lengths compete


def scores(source, history):
    """Logits of the next token after `history` (START first), for a source whose first token is `source`."""
    t = len(history) - 1
    return BY_LAST[history[-1]] + BY_POSITION[t] + BY_HISTORY[sum(history[1:]) % 3] + BY_SOURCE[source]


class Markov:
    """The model interface decoding.py uses: encode, memory_kv, init_cache, decode, __call__."""

    def encode(self, source_BxS):
        return source_BxS[:, :1, None].astype(jnp.float32), jnp.ones(source_BxS.shape, bool)

    def memory_kv(self, memory_BxSxD):
        return memory_BxSxD[:, 0, 0].astype(jnp.int32)

    def init_cache(self, rows, max_len, dtype):
        return {'sum': jnp.zeros((1, rows), jnp.int32)}  # (layers, rows), as beam search reorders it

    def _logits(self, source_R, last_R, t, sum_R):
        return (jnp.asarray(BY_LAST, jnp.float32)[last_R] + jnp.asarray(BY_POSITION, jnp.float32)[t]
                + jnp.asarray(BY_HISTORY, jnp.float32)[sum_R % 3] + jnp.asarray(BY_SOURCE, jnp.float32)[source_R])

    def decode(self, token_Rx1, cache, t, source_R, source_mask_RxS):
        # the sum holds the tokens fed after START: position 0 feeds START itself
        total_R = cache['sum'][0] + jnp.where(t > 0, token_Rx1[:, 0], 0)
        return self._logits(source_R, token_Rx1[:, 0], t, total_R)[:, None], {'sum': total_R[None]}

    def __call__(self, source_RxS, decoder_inputs):
        L = decoder_inputs.shape[1]
        sums = jnp.cumsum(decoder_inputs.at[:, 0].set(0), axis=1)
        return jnp.stack([self._logits(source_RxS[:, 0], decoder_inputs[:, t], t, sums[:, t]) for t in range(L)], 1)


def log_softmax(x):
    x = x - x.max()
    return x - np.log(np.exp(x).sum())


def exhaustive_best(source, alpha):
    """The finished sequence (ending in END, within MAX_LEN tokens, no PAD) with the best
    log-probability over GNMT's length penalty, by enumeration."""
    best, best_score = None, -math.inf
    words = [v for v in range(V) if v not in (PAD, END)]
    for length in range(1, MAX_LEN + 1):
        for body in itertools.product(words, repeat=length - 1):
            seq = [*body, END]
            history, logp = [decoding.START], 0.0
            for token in seq:
                logits = scores(source, history)
                logits[PAD] = -np.inf
                logp += log_softmax(logits)[token]
                history.append(token)
            score = logp / decoding.length_penalty(length, alpha)
            if score > best_score:
                best, best_score = seq, score
    return best


def greedy_reference(source):
    history = [decoding.START]
    while len(history) <= MAX_LEN:
        logits = scores(source, history)
        logits[PAD] = -np.inf
        history.append(int(np.argmax(logits)))
        if history[-1] == END:
            break
    return history[1:]


# NumPy: a JAX array made on import starts XLA's threads, and mutmut's forked children then hang
SOURCES = np.array([[2, 1], [3, 1], [4, 1], [0, 0]], np.int32)


@pytest.mark.parametrize('cached', [True, False])
def test_greedy_takes_the_argmax_at_every_step_then_pads(cached):
    out = np.asarray(decoding.greedy(Markov(), SOURCES, MAX_LEN, cached=cached))
    for row, source in zip(out, SOURCES[:, 0].tolist()):
        expected = greedy_reference(source)
        assert row.tolist() == expected + [PAD] * (MAX_LEN - len(expected))


@pytest.mark.parametrize('alpha', [0.0, 0.6, 2.0])
@pytest.mark.parametrize('cached', [True, False])
def test_a_beam_as_wide_as_every_hypothesis_finds_the_exhaustive_best(alpha, cached):
    """Width 3**(MAX_LEN - 1) keeps every live hypothesis (three words): beam search is then
    exhaustive search."""
    out = np.asarray(decoding.beam_search(Markov(), SOURCES, MAX_LEN, beam_size=3 ** (MAX_LEN - 1), alpha=alpha,
                                          cached=cached))
    for row, source in zip(out, SOURCES[:, 0].tolist()):
        assert decoding.strip(row) + [END] == exhaustive_best(source, alpha), (source, alpha)
        assert PAD not in decoding.strip(row)


def reference_beam(source, W, alpha):
    """Beam search as decoding.py's docstring states it, one hypothesis at a time: W live ones
    by log-probability, W finished ones by log-probability over the length penalty, stopping
    when no live one could still beat the worst finished one."""
    alive, finished = [([decoding.START], 0.0)], []
    for t in range(MAX_LEN):
        worst = finished[-1][1] if len(finished) == W else -math.inf
        if max(lp for _, lp in alive) / decoding.length_penalty(MAX_LEN, alpha) <= worst:
            break
        candidates = []
        for history, logp in alive:
            logits = scores(source, history)
            logits[PAD] = -np.inf
            step = log_softmax(logits)
            candidates += [(history + [v], logp + step[v]) for v in range(V) if v != PAD]
        candidates = sorted(candidates, key=lambda c: -c[1])[:2 * W]
        ended = [(h, lp / decoding.length_penalty(t + 1, alpha)) for h, lp in candidates if h[-1] == END]
        finished = sorted(finished + ended, key=lambda c: -c[1])[:W]
        alive = [c for c in candidates if c[0][-1] != END][:W]
    return (finished[0][0] if finished else alive[0][0])[1:]


@pytest.mark.parametrize('W', [2, 3])
@pytest.mark.parametrize('alpha', [0.0, 0.6, 2.0])
def test_narrow_beams_follow_the_reference_step_for_step(W, alpha):
    """Narrow beams drop hypotheses, reorder the survivors (and their cache rows) and stop
    early: each choice must be the reference's."""
    out = np.asarray(decoding.beam_search(Markov(), SOURCES, MAX_LEN, beam_size=W, alpha=alpha))
    for row, source in zip(out, SOURCES[:, 0].tolist()):
        expected = reference_beam(source, W, alpha)
        assert decoding.strip(row) == [x for x in expected if x != END], (source, W, alpha)


def test_the_length_penalty_and_strip_by_hand():
    assert decoding.length_penalty(1.0, 0.6) == pytest.approx((6 / 6) ** 0.6)
    assert decoding.length_penalty(7.0, 0.5) == pytest.approx(math.sqrt(2.0))
    assert decoding.strip([3, 4, END, 2, 2]) == [3, 4]
    assert decoding.strip([3, PAD, 4]) == [3]
    assert decoding.strip([]) == []
    logits = decoding.no_padding(jnp.zeros((2, V)))
    assert np.isneginf(np.asarray(logits)[:, PAD]).all() and np.asarray(logits)[:, 2:].max() == 0


class Scripted(Markov):
    """Log-probabilities by position alone, scripted so that two finished hypotheses' ranking
    turns on the exact length penalty: [END] with log-probability -2.3 (length 1) against
    [2, 2, END] with -3.0 (length 3); at alpha 1, -2.3 / 1 < -3.0 / (8/6), so the longer wins;
    with the penalty one token off (-2.3 / (7/6) > -3.0 / (9/6)) the shorter would."""
    TABLE = np.full((3, V), -40.0)
    TABLE[0, END], TABLE[0, 2] = -2.3, np.log1p(-np.exp(-2.3))
    TABLE[1, 2] = 0.0
    TABLE[2, END] = -3.0 - TABLE[0, 2]
    TABLE[2, 3] = np.log1p(-np.exp(TABLE[2, END]))

    def _logits(self, source_R, last_R, t, sum_R):
        return jnp.asarray(self.TABLE, jnp.float32)[t] + 0.0 * last_R[:, None]


def test_the_length_penalty_decides_between_finished_hypotheses_of_different_lengths():
    out = np.asarray(decoding.beam_search(Scripted(), SOURCES[:1], 3, beam_size=2, alpha=1.0))
    assert out[0].tolist() == [2, 2, END]
    out = np.asarray(decoding.beam_search(Scripted(), SOURCES[:1], 3, beam_size=2, alpha=0.0))
    assert out[0].tolist() == [END, PAD, PAD]  # no penalty: the likelier, shorter one


class Patient(Scripted):
    """[END] finishes first at -1.0; the live [2, 3] falls to -1.145 before its END (log-probability
    0). Only the bound with the penalty at max_len (-1.145 / (8/6) = -0.86 > -1.0) keeps searching,
    and [2, 3, END] scores -0.86: a search that stops on the raw log-probability misses it."""
    TABLE = np.full((3, V), -40.0)
    TABLE[0, END], TABLE[0, 2] = -1.0, np.log1p(-np.exp(-1.0))
    TABLE[1, 2], TABLE[1, 3] = -0.7, np.log1p(-np.exp(-0.7))
    TABLE[2, END] = 0.0


def test_the_search_goes_on_while_a_live_hypothesis_could_still_win():
    out = np.asarray(decoding.beam_search(Patient(), SOURCES[:1], 3, beam_size=1, alpha=1.0))
    assert out[0].tolist() == [2, 3, END]


class CacheOnly(Markov):
    """Holds decoding to its interface: the cached search must never run the whole decoder, and
    must ask for a cache of max_len positions in the memory's dtype, feed one token a step and
    pass every row its source's padding mask."""

    def __init__(self, rows: int):
        self.rows = rows   # batch rows times the beam width

    def init_cache(self, rows, max_len, dtype):
        assert (rows, max_len, dtype) == (self.rows, MAX_LEN, jnp.float32), (rows, max_len, dtype)
        return super().init_cache(rows, max_len, dtype)

    def decode(self, token_Rx1, cache, t, source_R, source_mask_RxS):
        assert token_Rx1.shape == (self.rows, 1) and source_mask_RxS.shape == (self.rows, SOURCES.shape[1])
        return super().decode(token_Rx1, cache, t, source_R, source_mask_RxS)

    def __call__(self, source_RxS, decoder_inputs):
        raise AssertionError('the cached search ran the whole decoder')


class DecoderOnly(Markov):
    """The uncached search: the whole decoder over max_len positions every step, never the cache."""

    def decode(self, *args):
        raise AssertionError('the uncached search read the cache')

    def __call__(self, source_RxS, decoder_inputs):
        assert decoder_inputs.shape[1] == MAX_LEN, decoder_inputs.shape
        return super().__call__(source_RxS, decoder_inputs)


@pytest.mark.parametrize('search', ['greedy', 'beam'])
def test_searches_cache_by_default_and_keep_to_the_model_interface(search):
    width = 2 if search == 'beam' else 1

    def run(model, **kw):
        if search == 'beam':
            return decoding.beam_search(model, SOURCES, MAX_LEN, beam_size=width, alpha=0.6, **kw)
        return decoding.greedy(model, SOURCES, MAX_LEN, **kw)
    by_cache = np.asarray(run(CacheOnly(rows=len(SOURCES) * width)))
    whole = np.asarray(run(DecoderOnly(), cached=False))
    np.testing.assert_array_equal(by_cache, whole)
    np.testing.assert_array_equal(by_cache, np.asarray(run(Markov())))


class Stops(Markov):
    """Greedy's script by (position, last token): START then 2, END; from position 2 on, 4 (what
    a search that did not stop at END would write); fed PAD instead of START first, 3."""
    TABLE = np.full((MAX_LEN + 1, V, V), -5.0)
    TABLE[0, decoding.START, 2] = TABLE[0, PAD, 3] = 0.0
    TABLE[1, :, END] = 0.0
    TABLE[2:, :, 4] = 0.0

    def _logits(self, source_R, last_R, t, sum_R):
        return jnp.asarray(self.TABLE, jnp.float32)[t, last_R]


@pytest.mark.parametrize('cached', [True, False])
def test_greedy_starts_from_start_and_pads_every_step_after_the_end(cached):
    out = np.asarray(decoding.greedy(Stops(), SOURCES, MAX_LEN, cached=cached))
    assert out.tolist() == [[2, END, PAD, PAD, PAD]] * len(SOURCES)


class TwoLengths(Scripted):
    """[END] at -2.0 against [2, END] at -2.4: at alpha 1 the penalties 1 and 7/6 give -2.0 against
    -2.06, so the shorter wins; a penalty two tokens short (4/6 and 5/6) would rank them -3.0
    against -2.88."""
    TABLE = np.full((3, V), -40.0)
    TABLE[0, END], TABLE[0, 2] = -2.0, np.log1p(-np.exp(-2.0))
    TABLE[1, END] = -2.4 - TABLE[0, 2]
    TABLE[1, 3] = np.log1p(-np.exp(TABLE[1, END]))


class NeverEnds(Scripted):
    """END impossible: nothing finishes, and the answer is the likeliest live hypothesis, 2 2 2
    (3 3 3 second)."""
    TABLE = np.full((3, V), -40.0)
    TABLE[:, END] = -np.inf
    TABLE[:, 2], TABLE[:, 3] = -0.1, -2.4


def test_beam_search_penalises_each_finished_length_and_falls_back_to_the_best_live():
    out = np.asarray(decoding.beam_search(TwoLengths(), SOURCES[:1], 2, beam_size=2, alpha=1.0))
    assert out[0].tolist() == [END, PAD]
    out = np.asarray(decoding.beam_search(NeverEnds(), SOURCES[:1], 3, beam_size=2, alpha=1.0))
    assert out[0].tolist() == [2, 2, 2]
