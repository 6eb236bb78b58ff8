"""The UV texture folder: the demo data set it makes, and one clear message per bad folder."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from headgen.errors import HeadgenError
from headgen.train.__main__ import main as train_main
from headgen.train.uv_data import check_folder, load_masks, load_normals, load_specular, load_textures


def test_demo_data_set_layout_and_content(uv_demo, capsys):
    ds = check_folder(uv_demo, need_triples=True)
    assert (ds.head, ds.size, len(ds.samples)) == ("ict-facekit", 64, 6)
    # every third texture has baked lighting (the undesired domain); the others are the triples
    assert [s.domain for s in ds.samples] == ["desired", "desired", "undesired"] * 2
    assert [s.name for s in ds.triples] == ["demo_000", "demo_001", "demo_003", "demo_004"]
    assert ds.samples[0].caption == "a young woman with blonde hair"  # the demo prior's first bank prompt
    tex, masks = load_textures(ds.samples, 64), load_masks(ds.samples, 8)
    assert tex.shape == (6, 3, 64, 64) and tex.min() >= -1 and tex.max() <= 1
    assert masks.shape == (6, 1, 8, 8)
    # B is 1 on the skin, 0 on hair and the atlas's unused bottom strip (ICT: v' < 0.25 is empty)
    full = load_masks(ds.samples, 64)
    assert float(full[:, :, -8:].max()) == 0.0
    assert 0.3 < float(full.mean()) < 0.7
    assert float(full[0].mean()) < float(full[2].mean())  # blonde hair vs a bald man: more non-face
    spec, normal = load_specular(ds.triples, 64), load_normals(ds.triples, 64)
    assert spec.shape == normal.shape == (4, 3, 64, 64)
    assert torch.equal(spec[:, 0], spec[:, 1])  # grey in three channels
    torch.testing.assert_close(normal.norm(dim=1), torch.ones(4, 64, 64))
    assert float(normal[:, 2].mean()) > 0.9  # mostly flat skin, facing +z

    assert train_main(["texture-data", "--check", str(uv_demo), "--triples"]) == 0
    out = capsys.readouterr().out
    assert "6 textures of 64x64 in the ict-facekit UV atlas (4 desired, 2 undesired domain); 4 (diffuse, " \
           "specular, normal) triples; non-face area" in out


def test_demo_command_refuses_a_non_empty_folder_and_bad_sizes(tmp_path, capsys):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x.txt").write_text("x")
    assert train_main(["texture-data", "--demo", str(tmp_path / "full"), "--count", "1", "--size", "16"]) == 2
    assert "exists and is not an empty folder" in capsys.readouterr().err
    assert train_main(["texture-data", "--demo", str(tmp_path / "new"), "--size", "20"]) == 2
    assert "--size 20: use a multiple of 8" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()


@pytest.fixture
def broken(uv_demo, tmp_path):
    """A fresh copy of the demo data set to break."""
    return shutil.copytree(uv_demo, tmp_path / "data")


def problems(folder, need_triples=False) -> str:
    with pytest.raises(HeadgenError) as info:
        check_folder(folder, need_triples=need_triples)
    msg = str(info.value)
    assert msg.count("is not a usable UV texture folder") == 1 and "expected layout:" in msg
    return msg


def write(path, array):
    import imageio.v3 as iio

    iio.imwrite(path, np.asarray(array, dtype=np.uint8))


def test_missing_masks_and_captions_are_one_message_naming_them(broken):
    (broken / "masks" / "demo_001.png").unlink()
    (broken / "captions" / "demo_004.txt").unlink()
    (broken / "captions" / "demo_005.txt").write_text("  \n")
    msg = problems(broken)
    assert "(3 problems)" in msg
    assert "1 texture(s) without a mask: demo_001 (add masks/NAME.png: one channel, white = face" in msg
    assert "1 texture(s) without a caption: demo_004 (add captions/NAME.txt" in msg
    assert "empty captions: demo_005.txt" in msg


def test_wrong_sizes_channels_and_unreadable_images(broken):
    write(broken / "masks" / "demo_000.png", np.zeros((32, 32)))
    write(broken / "masks" / "demo_002.png", np.zeros((64, 64, 3)))
    (broken / "textures" / "demo_003.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    msg = problems(broken)
    assert "images differ in size (most are 64x64): masks/demo_000.png is 32x32; resize them" in msg
    assert "masks/: wrong channels: demo_002.png is RGB: need one channel (grey) (save it as a single-channel" in msg
    assert "textures/demo_003.png: unreadable image (" in msg and "re-export it as PNG" in msg


def test_not_square_not_a_multiple_of_8_and_strays(broken, tmp_path):
    for sub in ("textures", "masks", "specular", "normal"):
        for path in (broken / sub).iterdir():
            channels = 3 if sub in ("textures", "normal") else None
            write(path, np.zeros((60, 60, channels) if channels else (60, 60)))
    (broken / "textures" / "notes.jpg").write_bytes(b"x")
    (broken / "masks" / "demo_999.png").write_bytes((broken / "masks" / "demo_000.png").read_bytes())
    msg = problems(broken)
    assert "the images are 60x60: the size must be a multiple of 8 (the VAE's factor), e.g. 56" in msg
    assert "textures/: not PNG files: notes.jpg" in msg
    assert "masks/ files without a texture: demo_999.png (a typo in the name?" in msg
    for sub in ("textures", "masks", "specular", "normal"):
        for path in (broken / sub).glob("*.png"):
            write(path, np.zeros((48, 64, 3) if sub in ("textures", "normal") else (48, 64)))
    assert "the images are 64x48: UV textures must be square" in problems(broken)


def test_dataset_json_and_empty_folder(broken, tmp_path):
    (broken / "dataset.json").write_text(json.dumps({"head": "flam", "undesired": ["nope"], "extra": 1}))
    msg = problems(broken)
    assert "dataset.json: head must be one of ict-facekit, builtin, flame (the UV atlas of the textures), got 'flam'" \
        in msg
    assert "dataset.json: unknown key(s) extra" in msg
    assert "dataset.json: undesired names without a texture: nope" in msg
    (tmp_path / "empty").mkdir()
    msg = problems(tmp_path / "empty")
    assert "(2 problems)" in msg and "no dataset.json" in msg and "textures/ is missing or holds no PNG" in msg
    with pytest.raises(HeadgenError, match="no such folder"):
        check_folder(tmp_path / "absent")


def test_triples_are_required_only_for_the_decoders(broken, capsys):
    (broken / "normal" / "demo_000.png").unlink()
    check_folder(broken)  # the texture LDM needs no triples
    msg = problems(broken, need_triples=True)
    assert "half (diffuse, specular, normal) triples: demo_000 has specular/ but no normal/" in msg
    shutil.rmtree(broken / "normal")
    shutil.rmtree(broken / "specular")
    msg = problems(broken, need_triples=True)
    assert "no (diffuse, specular, normal) triple: the PBR decoders need specular/NAME.png and normal/NAME.png" in msg
    # the command says it once, on stderr, with exit code 2
    assert train_main(["texture-data", "--check", str(broken), "--triples"]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "no (diffuse, specular, normal) triple" in err
