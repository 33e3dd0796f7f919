"""Crash-safe folder replacement and publishing modes (no model needed)."""

from __future__ import annotations

import os
import stat

import pytest

from mxa_edge.support import fileio


def _folder(path, text):
    path.mkdir()
    (path / "model.onnx").write_text(text)
    return path


def test_replace_dir_swaps_in_one_step(tmp_path):
    dest = _folder(tmp_path / "art", "old")
    new = _folder(tmp_path / ".art.partial", "new")
    fileio.replace_dir(new, dest)
    assert (dest / "model.onnx").read_text() == "new"
    assert not new.exists() and not fileio.previous_path(dest).exists()


def test_replace_dir_killed_between_the_two_moves_leaves_a_complete_folder(tmp_path, monkeypatch):
    """Where no atomic swap exists, the old folder is moved aside first. Killed after that move
    (simulated: the second move raises), the old folder is complete aside, and the next
    replace (or restore_interrupted) puts it back before going on."""
    dest = _folder(tmp_path / "art", "old")
    new = _folder(tmp_path / ".art.partial", "new")
    monkeypatch.setattr(fileio, "_exchange", lambda a, b: False)
    real_replace, calls = os.replace, []

    def killed_on_second_move(src, dst):
        calls.append(src)
        if len(calls) == 2:
            raise KeyboardInterrupt("killed")
        real_replace(src, dst)

    monkeypatch.setattr(fileio.os, "replace", killed_on_second_move)
    with pytest.raises(KeyboardInterrupt):
        fileio.replace_dir(new, dest)
    monkeypatch.setattr(fileio.os, "replace", real_replace)
    aside = fileio.previous_path(dest)
    assert not dest.exists() and (aside / "model.onnx").read_text() == "old"  # complete, nothing lost
    assert fileio.restore_interrupted(dest) and (dest / "model.onnx").read_text() == "old"
    fileio.replace_dir(new, dest)  # the export run again
    assert (dest / "model.onnx").read_text() == "new" and not aside.exists()


def test_published_files_and_folders_get_the_usual_modes(tmp_path):
    old = os.umask(0o022)
    try:
        fileio.write_json(tmp_path / "m.json", {"a": 1})
        with fileio.atomic_dir(tmp_path / "d") as d:
            (d / "x").write_text("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "m.json").stat().st_mode) == 0o644  # not mkstemp's 0600
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o755  # not mkdtemp's 0700
