"""What `object2vec transform` does with inputs it cannot read and output paths it must not
use, before any request is sent (no server needed)."""

import os

import pytest

from client.batching import TransformOptions, at_line
from client.transform import UnsafePath, transform


def options(output, **changes) -> TransformOptions:
    return TransformOptions(
        urls=("127.0.0.1:9",), output_path=str(output), progress=False, **changes
    )


def test_links_that_cannot_be_read_are_skipped_and_reported(tmp_path):
    inputs = tmp_path / "in"
    (inputs / "folder").mkdir(parents=True)
    os.symlink(inputs / "folder", inputs / "link-to-folder")
    os.symlink(inputs / "loop-a", inputs / "loop-b")
    os.symlink(inputs / "loop-b", inputs / "loop-a")
    os.symlink(inputs / "self", inputs / "self")
    summary = transform(str(inputs), options(tmp_path / "out"))
    reported = sorted(os.path.basename(f.file) for f in summary.failures)
    assert reported == ["link-to-folder", "loop-a", "loop-b", "self"]
    assert all("skipped" in f.message and f.line == 0 for f in summary.failures)
    assert "link-to-folder: cannot be read" in summary.report()


@pytest.mark.parametrize("where", ["the input file", "the input folder", "inside the folder"])
def test_an_output_path_that_is_the_input_or_inside_it_is_refused(tmp_path, where):
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "a.jsonl").write_text('{"in0": [1]}\n')
    source, output = {
        "the input file": (inputs / "a.jsonl", inputs / "a.jsonl"),
        "the input folder": (inputs, inputs),
        "inside the folder": (inputs, inputs / "out"),
    }[where]
    with pytest.raises(UnsafePath, match="is the input or lies inside it"):
        transform(str(source), options(output))
    assert (inputs / "a.jsonl").read_text() == '{"in0": [1]}\n'


def test_a_line_sent_alone_is_named_by_its_place_in_the_file():
    assert (
        at_line("line 1: malformed JSON Lines record: x", 3)
        == "line 3: malformed JSON Lines record: x"
    )
    assert at_line("instances[0]: in0 is empty", 7) == "line 7: in0 is empty"
    assert at_line("body exceeds the limit", 2) == "body exceeds the limit"
