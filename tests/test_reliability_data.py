"""Issue 11: datasets that training must refuse with the file named."""
from __future__ import annotations

import pytest

from craft_plugin.data.dataloader import get_dataloader


@pytest.mark.parametrize("present, missing", [("train.rec", "train.idx"), ("train.idx", "train.rec")])
def test_a_rec_without_its_idx_is_named_never_handed_to_the_image_folder_fallback(tmp_path, present, missing):
    (tmp_path / present).write_bytes(b"\x00" * 64)
    (tmp_path / "property").write_text("2,112,112\n")
    called = []
    with pytest.raises(FileNotFoundError, match=f"{tmp_path / missing}: missing beside {present}"):
        get_dataloader(str(tmp_path), 0, 8, fallback=lambda *args: called.append(args))
    assert called == []
