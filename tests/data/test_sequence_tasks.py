"""Generated seq2seq digit tasks: tokens, targets, static batch shapes, determinism, held-out exclusion, errors."""

import itertools

import numpy as np
import pytest

from jaxdl.data import sequence_tasks as st
from jaxdl.errors import UsageError


def test_encode_decode_round_trip_and_special_tokens():
    ids = st.encode("0123456789+")
    assert ids.dtype == np.int32 and ids.tolist() == list(range(3, 14)) and st.VOCAB_SIZE == 14
    assert st.decode(ids) == "0123456789+"
    assert st.decode([st.BOS, 4, 5, st.EOS, 6, st.PAD]) == "12"
    assert st.decode([7, st.PAD, 8]) == "45"
    with pytest.raises(UsageError, match="'a'"):
        st.encode("12a")


@pytest.mark.parametrize("task", st.TASKS)
def test_targets_match_a_direct_computation(task):
    batch = st.sequence_batches(task, 64, 1, 6, seed=3)[0]
    for src_ids, out_ids in zip(batch["source"], batch["target_out"]):
        src, tgt = st.decode(src_ids), st.decode(out_ids)
        if task == "reverse":
            assert tgt == "".join(reversed(src))
        elif task == "sort":
            assert sorted(tgt) == sorted(src) and list(tgt) == sorted(tgt)
        else:
            a, b = src.split("+")
            assert len(a) == len(b) and int(tgt) == int(a) + int(b) and str(int(tgt)) == tgt
            assert len(a) == 1 or (a[0] != "0" and b[0] != "0")
    assert st.target_for("add", "99+01") == "100" and st.target_for("add", "0+0") == "0"
    assert st.target_for("sort", "3102") == "0123" and st.target_for("reverse", "3102") == "2013"


@pytest.mark.parametrize("task", st.TASKS)
def test_batch_shapes_are_static_and_masks_cover_target_plus_eos(task):
    B, max_len = 32, 5
    S, T = st.max_source_len(task, max_len), st.max_target_len(task, max_len) + 1
    lengths_seen = set()
    for batch in _take(st.sequence_batches(task, B, 1, max_len, 0), 5):
        assert batch["source"].shape == (B, S) and batch["source_lengths"].shape == (B,)
        for key in ("target_in", "target_out", "target_mask"):
            assert batch[key].shape == (B, T)
        assert all(batch[k].dtype == np.int32 for k in ("source", "source_lengths", "target_in", "target_out"))
        assert batch["target_mask"].dtype == bool
        for i in range(B):
            src = st.decode(batch["source"][i])
            tgt = st.target_for(task, src)
            n = len(src.split("+")[0])
            assert 1 <= n <= max_len
            lengths_seen.add(n)
            assert batch["source_lengths"][i] == len(src) and (batch["source"][i, len(src):] == st.PAD).all()
            assert batch["target_mask"][i].sum() == len(tgt) + 1
            assert batch["target_mask"][i, :len(tgt) + 1].all()
            assert batch["target_out"][i, len(tgt)] == st.EOS
        # target_in is target_out (its EOS dropped) shifted right by one behind BOS
        out_no_eos = np.where(batch["target_out"] == st.EOS, st.PAD, batch["target_out"])
        expected_in = np.concatenate([np.full((B, 1), st.BOS), out_no_eos[:, :-1]], axis=1)
        assert (batch["target_in"] == expected_in).all()
        assert (batch["target_in"][~batch["target_mask"]] == st.PAD).all()
    assert lengths_seen == set(range(1, max_len + 1))


def test_add_target_width_has_room_for_the_carry():
    assert st.max_source_len("add", 4) == 9 and st.max_target_len("add", 4) == 5
    assert st.max_source_len("reverse", 4) == 4 and st.max_target_len("sort", 4) == 4


def _take(dataset, k):
    return [dataset[s] for s in range(k)]


@pytest.mark.parametrize("task", st.TASKS)
def test_stream_is_a_pure_function_of_seed_and_step(task):
    make = lambda seed=7: st.sequence_batches(task, 8, 1, 6, seed)
    full = _take(make(), 10)
    for again, batch in zip(_take(make(), 10), full):
        assert all((again[k] == batch[k]).all() for k in batch)
    for s in (9, 6, 2):  # any step on its own, in any order: what a resumed run reads
        assert all((make()[s][k] == full[s][k]).all() for k in full[s])
    assert not (full[0]["source"] == full[1]["source"]).all()
    assert not (make(seed=8)[0]["source"] == full[0]["source"]).all()


def test_excluded_sources_never_appear_in_training():
    held = st.held_out("reverse", 2000, 4, 4, seed=0)  # a fifth of all 10,000 length-4 strings
    stream = st.sequence_batches("reverse", 64, 4, 4, 0, exclude=held.sources)
    seen = {st.decode(row) for batch in _take(stream, 50) for row in batch["source"]}
    assert len(seen) > 1000 and not seen & held.sources
    unfiltered = st.sequence_batches("reverse", 64, 4, 4, 0)  # the check can fail
    assert {st.decode(row) for batch in _take(unfiltered, 50) for row in batch["source"]} & held.sources


@pytest.mark.parametrize("task", st.TASKS)
def test_held_out_set_is_distinct_in_range_and_deterministic(task):
    held = st.held_out(task, 300, 1, 6, seed=1)
    sources = [st.decode(row) for row in held.batch["source"]]
    assert len(sources) == 300 and len(set(sources)) == 300 and set(sources) == held.sources
    lengths = {len(s.split("+")[0]) for s in sources}
    assert lengths == set(range(4, 7))  # short lengths are never held out
    assert held.batch["source"].shape[1] == st.max_source_len(task, 6)
    assert held.sources == st.held_out(task, 300, 1, 6, seed=1).sources
    assert held.sources != st.held_out(task, 300, 1, 6, seed=2).sources


def test_longer_test_uses_only_longer_lengths_and_its_own_widths():
    longer = st.longer_test("add", 100, 5, 3, seed=0)
    lengths = {len(s.split("+")[0]) for s in longer.sources}
    assert lengths == {6, 7, 8} and len(longer.sources) == 100
    assert longer.batch["source"].shape == (100, st.max_source_len("add", 8))
    assert longer.batch["target_out"].shape == (100, st.max_target_len("add", 8) + 1)


@pytest.mark.parametrize("call, message", [
    (lambda: st.sequence_batches("copy", 8, 1, 4, 0), "reverse, sort, add"),
    (lambda: st.sequence_batches("sort", 8, 0, 4, 0), "min_len must be >= 1"),
    (lambda: st.sequence_batches("sort", 8, 5, 4, 0), "greater than max_len"),
    (lambda: st.sequence_batches("sort", 0, 1, 4, 0), "batch_size"),
    (lambda: st.held_out("sort", 10, 1, 3, 0), "--max-len >= 4"),
    (lambda: st.held_out("sort", 6000, 4, 4, 0), "too many"),
    (lambda: st.held_out("add", 0, 1, 5, 0), "n must be"),
    (lambda: st.longer_test("add", 10, 5, 0, 0), "extra"),
    (lambda: st.target_for("copy", "12"), "unknown sequence task"),
    (lambda: st.sequence_batches("reverse", 4, 1, 1, 0, exclude=frozenset("0123456789"))[0],
     "excluded"),
])
def test_bad_inputs_raise_usage_error(call, message):
    with pytest.raises(UsageError, match=message) as info:
        call()
    assert "\n" not in str(info.value)
