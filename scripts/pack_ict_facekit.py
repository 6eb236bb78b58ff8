"""Pack the public ICT-FaceKit into the compact file headgen ships (headgen/heads/data/ict-facekit/).

    python scripts/pack_ict_facekit.py ../shared/data/ict-facekit-full [--out headgen/heads/data/ict-facekit]

The source is a folder holding ``ict_facekit.npz`` (neutral, identity and expression deltas),
``generic_neutral_mesh.obj.gz`` (topology and UVs), ``vertex_indices.json``, ``LICENSE`` and
``CREDITS.md``: the packed public ICT-FaceKit (MIT). The output folder gets ``ict_facekit.npz``
(read by :func:`headgen.heads.ict.load_ict_facekit`; format in :mod:`headgen.heads.ict_files`)
and the LICENSE and CREDITS.md beside it, which the MIT licence requires.

Precision: the neutral mesh stays float32 (float16 would err about 2.3e-4 head heights); identity
and expression deltas are float16 (about 3e-5 head heights, printed by this script).
"""

from __future__ import annotations

import argparse
import gzip
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from headgen.errors import HeadgenError  # noqa: E402
from headgen.heads.ict_files import PACKED_DIR, write_packed  # noqa: E402
from headgen.heads.obj_reader import read_obj  # noqa: E402


def transferred_landmarks(packed: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """The built-in head's MediaPipe landmarks carried onto the packed ICT skin (None when the
    model has no Multi-PIE landmarks to fit the warp on, e.g. a test's tiny mesh)."""
    from headgen.heads import load_builtin_head
    from headgen.heads.ict import load_ict_facekit
    from headgen.heads.ict_landmarks import transfer_landmarks

    try:
        ict = load_ict_facekit(packed, parts="none", num_identity=0)
    except HeadgenError:
        return None
    if ict.num_landmarks < 10:
        return None
    builtin = load_builtin_head()
    return transfer_landmarks(builtin.landmark_ids.numpy(), builtin.landmarks().numpy(), ict.landmark_ids.numpy(),
                              ict.landmarks().numpy(), ict.v_template.numpy(), ict.faces.numpy())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("source", type=Path, help="folder of the packed public ICT-FaceKit (ict_facekit.npz, ...)")
    ap.add_argument("--out", type=Path, default=PACKED_DIR, help=f"output folder (default {PACKED_DIR})")
    args = ap.parse_args(argv)
    src: Path = args.source
    need = ["ict_facekit.npz", "generic_neutral_mesh.obj.gz", "vertex_indices.json", "LICENSE", "CREDITS.md"]
    missing = [n for n in need if not (src / n).is_file()]
    if missing:
        print(f"error: {src} lacks {', '.join(missing)}", file=sys.stderr)
        return 2
    arrays = np.load(src / "ict_facekit.npz")
    with tempfile.TemporaryDirectory() as tmp:
        obj_path = Path(tmp) / "generic_neutral_mesh.obj"
        obj_path.write_bytes(gzip.decompress((src / "generic_neutral_mesh.obj.gz").read_bytes()))
        obj = read_obj(obj_path)
    neutral = arrays["neutral"].astype(np.float32)
    if np.abs(obj.vertices - neutral).max() > 1e-4:
        print("error: the OBJ's vertices differ from ict_facekit.npz's neutral", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    contents = dict(
        neutral=neutral,
        obj=obj,
        identity_names=[str(n) for n in arrays["identity_names"]],
        identity_deltas=arrays["identity_deltas"],
        expression_names=[str(n) for n in arrays["expression_names"]],
        expression_deltas=arrays["expression_deltas"],
        index_json=(src / "vertex_indices.json").read_text(),
        source=f"packed from {src.name} by scripts/pack_ict_facekit.py",
    )
    out = write_packed(args.out / "ict_facekit.npz", **contents)
    # The landmarks are fitted on the packed model itself, then stored with it.
    mediapipe = transferred_landmarks(out)
    if mediapipe is not None:
        write_packed(out, **contents, mediapipe=mediapipe)
    if mediapipe is not None:
        print(f"transferred {len(mediapipe[0])} MediaPipe landmarks from the built-in head")
    for name in ("LICENSE", "CREDITS.md"):
        shutil.copyfile(src / name, args.out / name)
    height = float(neutral[:, 1].max() - neutral[:, 1].min())
    for key in ("identity_deltas", "expression_deltas"):
        err = np.abs(arrays[key].astype(np.float16).astype(np.float32) - arrays[key]).max()
        print(f"{key}: float16 error max {err:.2e} cm = {err / height:.1e} mesh heights")
    print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB) with LICENSE and CREDITS.md beside it")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
