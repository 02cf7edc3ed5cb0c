"""The client's packing and naming rules, without a server."""

from __future__ import annotations

import pytest

from client.api import Client, Object2VecError
from client.batching import body_size, make_body, pack
from client.transform import UnsafePath, output_name
from contract.names import JSON, JSONLINES
from tests.helpers import free_port, random_lines


def test_an_unreachable_server_is_a_retryable_error():
    with Client(f"localhost:{free_port()}", timeout=2) as client:
        with pytest.raises(Object2VecError) as error:
            client.embed([[1, 2]])
        assert error.value.retryable
        assert not client.is_ready()


@pytest.mark.parametrize("content_type", [JSON, JSONLINES])
def test_multirecord_packs_up_to_the_limit_and_never_over(content_type):
    lines = random_lines(300, "mixed")
    for limit in (
        body_size(lines[:1], content_type),
        body_size(lines[:7], content_type),
        body_size(lines[:7], content_type) + 1,
        4096,
    ):
        groups = list(pack(lines, content_type, "MultiRecord", limit))
        assert sorted(i for g, _ in groups for i in g) == list(range(len(lines)))
        packed = [group for group, why in groups if not why]
        for group in packed:
            size = len(make_body([lines[i] for i in group], content_type))
            assert size == body_size([lines[i] for i in group], content_type) <= limit
        # Full: the next line that fits alone would not have fit in the group.
        for group, following in zip(packed, packed[1:], strict=False):
            with_next = [lines[i] for i in group + following[:1]]
            assert body_size(with_next, content_type) > limit
    exact = body_size(lines[:7], content_type)
    first, _ = next(pack(lines, content_type, "MultiRecord", exact))
    assert len(first) >= 7


def test_singlerecord_sends_one_line_per_request():
    lines = random_lines(20, "pairs")
    assert [g for g, _ in pack(lines, JSONLINES, "SingleRecord", 10**6)] == [[i] for i in range(20)]


def test_a_record_alone_over_the_payload_is_refused():
    lines = [b'{"in0":[1]}', b'{"in0":[' + b"1," * 100 + b"1]}", b'{"in0":[2]}']
    groups = list(pack(lines, JSONLINES, "MultiRecord", 100))
    assert groups[0] == ([1], "record of 212 bytes exceeds max_payload (100 bytes)")
    assert [g for g, why in groups if not why] == [[0, 2]]


@pytest.mark.parametrize(
    "path, root",
    [
        ("bucket/in/../../etc/x.jsonl", "bucket/in"),
        ("bucket/in/a/../../../x.jsonl", "bucket/in"),
        ("bucket/in/..", "bucket/in"),
    ],
)
def test_output_names_that_escape_the_output_path_are_refused(path, root):
    with pytest.raises(UnsafePath):
        output_name(path, root, "out")
    assert output_name("bucket/in/a/./b.jsonl", "bucket/in", "out") == "out/a/b.jsonl.out"


def test_packing_respects_the_record_cap():
    lines = [b'{"in0": [1]}'] * 25
    groups = [g for g, why in pack(lines, JSONLINES, "MultiRecord", 10**6, max_records=10)]
    assert [len(g) for g in groups] == [10, 10, 5]
