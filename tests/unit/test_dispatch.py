"""Routing and batching, with ONNX Runtime running the exported demo model in-process."""

import numpy as np
import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from contract.facts import Facts
from contract.names import JSON
from server.common.onnx_sessions import network_runner
from server.frontdoor.cutting import CallCost
from server.frontdoor.dispatch import by_request, dispatch, measure_costs, plan, run_calls
from server.frontdoor.payload import Limits, parse_request


def _requests(repository, bodies):
    limits = Limits.of(Facts.load(repository), 1 << 24)
    return [parse_request(orjson.dumps(b), JSON, None, limits) for b in bodies]


def _bodies(seed=0):
    rng = np.random.default_rng(seed)
    seq = lambda: rng.integers(1, 12000, size=rng.integers(1, 90)).tolist()  # noqa: E731
    return [
        {
            "instances": [{"in0": seq()}, {"in1": seq()}, {"in0": seq(), "in1": seq()}][
                : int(rng.integers(1, 4))
            ]
        }
        for _ in range(40)
    ]


def test_one_call_per_network_by_default(demo_repository):
    requests = _requests(demo_repository, _bodies())
    calls = plan(requests, max_batch_size=4096)
    assert sorted(c.model for c in calls) == ["enc0", "enc1", "pair"]
    assert sum(len(c.members) for c in calls) == sum(len(r.instances) for r in requests)
    small = plan(requests, max_batch_size=7)
    assert all(len(c.members) <= 7 for c in small)


def test_calls_cut_by_cost_keep_every_answer(demo_repository):
    requests = _requests(demo_repository, _bodies(1))
    run = network_runner(demo_repository)
    whole = dispatch(requests, run, 4096)
    # a padded token dear next to a call: the instances are cut by length
    costs = {name: CallCost(1e-6, 1e-6) for name in ("enc0", "enc1", "pair")}
    cut_calls = plan(requests, 4096, costs)
    assert len(cut_calls) > 3
    padded = sum(a.size for c in cut_calls for a in c.feed.values())
    assert padded < sum(a.size for c in plan(requests, 4096) for a in c.feed.values())
    assert sorted(m for c in cut_calls for m in c.members) == sorted(
        (r, i) for r, request in enumerate(requests) for i in range(len(request))
    )
    for a, b in zip(whole, dispatch(requests, run, 4096, costs), strict=True):
        for (key_a, va), (key_b, vb) in zip(a, b, strict=True):
            assert key_a == key_b
            np.testing.assert_allclose(va, vb, atol=1e-5, rtol=0)
    # a call dear next to the padding: one call per network
    assert len(plan(requests, 4096, {n: CallCost(1.0, 1e-9) for n in costs})) == 3


def test_measured_costs_are_positive_and_a_tiny_request_stays_one_call(demo_repository):
    run = network_runner(demo_repository)
    costs = measure_costs(run)
    assert set(costs) == {"enc0", "enc1", "pair"}
    assert all(c.call_s >= 0 and c.token_s > 0 for c in costs.values())
    # The documentation's three instances: a second call costs more than their padding.
    doc = {"instances": [{"in0": [6, 17, 606, 19, 53, 67, 52, 12, 5, 10, 15, 10178, 7, 33,
                                  652, 80, 15, 69, 821, 4]},
                         {"in0": [22, 1016, 32, 13, 25, 11, 5, 64, 573, 45, 5, 80, 15, 67,
                                  21, 7, 9, 107, 4]},
                         {"in0": [774, 14, 21, 206]}]}  # fmt: skip
    assert len(plan(_requests(demo_repository, [doc]), 4096, costs)) == 1


def test_a_failed_call_is_retried_per_request_and_fails_only_the_culprit(demo_repository):
    requests = _requests(demo_repository, [{"instances": [{"in0": [1, 2, 3]}]}] * 5)
    run = network_runner(demo_repository)
    culprit = 2

    def fragile(model, feed, output):
        # A network that rejects any batch holding the culprit's tokens (row 2 of the call).
        if any(np.array_equal(row[:3], [7, 7, 7]) for row in feed["tokens"]):
            raise RuntimeError("rejected")
        return run(model, feed, output)

    requests[culprit].instances[0].in0[:] = 7
    calls = plan(requests, 4096)
    assert len(calls) == 1 and len(by_request(calls[0])) == 5
    kept, outputs = run_calls(calls, fragile)
    assert len(kept) == 5
    answers = dispatch(requests, fragile, 4096)
    assert isinstance(answers[culprit], RuntimeError)
    alone = dispatch([requests[0]], run, 4096)[0]
    for r, answer in enumerate(answers):
        if r != culprit:
            np.testing.assert_allclose(answer[0][1], alone[0][1], atol=1e-6, rtol=0)


_instance = st.fixed_dictionaries(
    {},
    optional={
        "in0": st.lists(st.integers(1, 11999), min_size=1, max_size=12),
        "in1": st.lists(st.integers(1, 11999), min_size=1, max_size=12),
    },
).filter(bool)


@settings(max_examples=150, deadline=None)
@given(
    bodies=st.lists(st.lists(_instance, min_size=1, max_size=6), min_size=1, max_size=5),
    call=st.floats(0, 1e-3),
    token=st.floats(1e-9, 1e-4),
    max_batch=st.integers(1, 8),
    max_tokens=st.one_of(st.none(), st.integers(1, 60)),
    measured=st.booleans(),
)
def test_every_instance_lands_once_in_a_call_with_its_own_tokens(
    demo_repository, bodies, call, token, max_batch, max_tokens, measured
):
    requests = _requests(demo_repository, [{"instances": b} for b in bodies])
    costs = {n: CallCost(call, token) for n in ("enc0", "enc1", "pair")} if measured else None
    calls = plan(requests, max_batch, costs, max_tokens)
    seen = []
    for c in calls:
        assert len(c.members) <= max_batch
        padded = sum(a.size for a in c.feed.values())
        assert max_tokens is None or padded <= max_tokens or len(c.members) == 1
        for row, (r, i) in enumerate(c.members):
            instance = bodies[r][i]
            keys = [k for k in ("in0", "in1") if k in instance]
            assert c.model == {("in0",): "enc0", ("in1",): "enc1"}.get(tuple(keys), "pair")
            for name, key in zip(c.feed, keys, strict=True):
                tokens = instance[key][:100]  # the demo model's max_seq_len
                padded = c.feed[name][row]
                assert padded[: len(tokens)].tolist() == tokens and not padded[len(tokens) :].any()
            seen.append((r, i))
    assert sorted(seen) == [(r, i) for r, b in enumerate(bodies) for i in range(len(b))]


def test_flat_forms_give_the_padded_answers_and_split_per_request(demo_repository):
    """The demo model's hcnn encoders have flat forms: their calls carry no padding, answer
    as the padded calls do, and a failed flat call is cut per request like any other."""
    requests = _requests(demo_repository, _bodies(2))
    run = network_runner(demo_repository)
    assert set(run.flat) == {"enc0", "enc1"}
    padded = dispatch(requests, run, 4096)
    flat = dispatch(requests, run, 4096, None, 300, run.flat)
    for a, b in zip(padded, flat, strict=True):
        for (key_a, va), (key_b, vb) in zip(a, b, strict=True):
            assert key_a == key_b
            np.testing.assert_allclose(va, vb, atol=1e-5, rtol=1e-5)
    calls = [c for c in plan(requests, 4096, None, 300, run.flat) if c.separator]
    assert len(calls) > 2 and all(
        c.feed["tokens"].size <= 300 or len(c.members) == 1 for c in calls
    )
    for call in calls:
        real = sum(
            len(
                requests[r].instances[i].in0
                if call.model.startswith("enc0")
                else requests[r].instances[i].in1
            )
            for r, i in call.members
        )
        assert call.feed["tokens"].size == real + call.separator * len(call.members)
        parts = by_request(call)
        whole = run(call.model, call.feed, call.output)
        pieces = np.concatenate([run(p.model, p.feed, p.output) for p in parts])
        order = [m for p in parts for m in p.members]
        np.testing.assert_allclose(
            pieces, whole[[call.members.index(m) for m in order]], atol=1e-5, rtol=1e-5
        )
