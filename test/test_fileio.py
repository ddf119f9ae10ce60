"""`pebal_core.fileio`: atomic writes, file hashes, generated sections of documents."""

from __future__ import annotations

import hashlib

import pytest

from pebal_core.fileio import atomic_write_text, replace_between_markers, sha256_file

BEGIN, END = "<!-- gen:begin -->", "<!-- gen:end -->"


def test_atomic_write_text_replaces_the_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "notes.md"
    atomic_write_text(path, "first\n")
    atomic_write_text(path, "second\n")
    assert path.read_text() == "second\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.md"]


def test_sha256_file_matches_hashlib(tmp_path):
    data = bytes(range(256)) * 5000  # larger than one read chunk
    (tmp_path / "blob").write_bytes(data)
    assert sha256_file(tmp_path / "blob", chunk=4096) == hashlib.sha256(data).hexdigest()


def test_replace_between_markers_keeps_everything_outside(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text(f"# Title\n\nintro\n\n{BEGIN}\nold table\n{END}\n\nanalysis\n")
    replace_between_markers(doc, BEGIN, END, ["| a |", "|---|"])
    assert doc.read_text() == f"# Title\n\nintro\n\n{BEGIN}\n| a |\n|---|\n{END}\n\nanalysis\n"
    replace_between_markers(doc, BEGIN, END, ["new"])  # idempotent structure: markers stay
    assert doc.read_text() == f"# Title\n\nintro\n\n{BEGIN}\nnew\n{END}\n\nanalysis\n"


def test_replace_between_markers_names_missing_markers(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text("no markers here\n")
    with pytest.raises(ValueError, match="lacks the markers"):
        replace_between_markers(doc, BEGIN, END, ["x"])
    assert doc.read_text() == "no markers here\n"
