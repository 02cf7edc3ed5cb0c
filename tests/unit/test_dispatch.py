"""Routing and batching, with ONNX Runtime running the exported demo model in-process."""

import numpy as np
import orjson

from contract.facts import Facts
from contract.names import JSON
from server.dispatch import by_request, dispatch, plan, run_calls
from server.onnx_sessions import network_runner
from server.payload import Limits, parse_request


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


def test_length_groups_bound_padding_and_keep_every_answer(demo_repository):
    requests = _requests(demo_repository, _bodies(1))
    run = network_runner(demo_repository)
    whole = dispatch(requests, run, 4096)
    grouped_calls = plan(requests, 4096, max_padding_ratio=1.25)
    assert len(grouped_calls) > 3
    for call in grouped_calls:
        real = sum(int((a != 0).sum()) for a in call.feed.values())
        padded = sum(a.size for a in call.feed.values())
        assert padded <= 1.25 * real or len(call.members) == 1
    grouped = dispatch(requests, run, 4096, max_padding_ratio=1.25)
    for a, b in zip(whole, grouped, strict=True):
        for (key_a, va), (key_b, vb) in zip(a, b, strict=True):
            assert key_a == key_b
            np.testing.assert_allclose(va, vb, atol=1e-5, rtol=0)


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
