"""The front door's input tensor: bodies as zero-padded rows of raw bytes."""

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from contract.body import decode_bodies, encode_bodies

# What a body can hold: any bytes but a zero byte, which a JSON text never contains.
body_bytes = st.binary(max_size=64).map(lambda b: b.replace(b"\0", b" "))


@given(st.lists(body_bytes, min_size=1, max_size=5))
def test_bodies_come_back_as_they_were_sent(bodies):
    array = encode_bodies(bodies)
    assert array.dtype == np.uint8 and array.shape == (len(bodies), max(map(len, bodies)))
    assert decode_bodies(array) == bodies


def test_one_body_is_one_row_without_a_copy_or_a_length_prefix():
    body = b'{"in0": [1, 2]}'
    array = encode_bodies([body])
    assert array.shape == (1, len(body)) and array.tobytes() == body
    assert decode_bodies(array) == [body]
