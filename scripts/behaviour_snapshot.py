"""Record, then compare, what the reduced recipes produce: a refactor must not change behaviour.

    python scripts/behaviour_snapshot.py record before.json     # on the old code
    python scripts/behaviour_snapshot.py record after.json      # on the new code, same machine
    python scripts/behaviour_snapshot.py compare before.json after.json

``record`` runs the reduced DreamFace, HeadSculpt (+ IESD edit) and HeadArtist (+ edit) recipes of
the tests under the demo prior with one torch thread, and writes every run's metrics (timings left
out) and a SHA-256 per tensor of every stage's ``result.safetensors``. ``compare`` prints each
difference and exits 1 when there is one. Nothing here is committed as a golden file: hashes depend
on the machine, the thread count and the library versions, so both files come from one machine.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for path in (REPO, REPO / "tests", REPO / "tests" / "plugins"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

TIMING = ("seconds", "time", "wall")


def _runs(out: Path) -> dict[str, Path]:
    """{name: run directory} of the reduced recipes, in the order the tests run them."""
    import test_dreamface
    import test_headartist
    import test_headartist_edit
    import test_headsculpt
    from runhelpers import launch_demo

    runs: dict[str, Path] = {}
    runs["dreamface"] = launch_demo(
        "methods/dreamface.yaml", out / "dreamface",
        "stages.coarse.selector.cache_dir=" + str(out / "pool-cache"),
        "stages.hair.selector.cache_dir=" + str(out / "hair-cache"), *test_dreamface.REDUCED)
    runs["headsculpt"] = launch_demo(test_headsculpt.RECIPE, out / "headsculpt", *test_headsculpt.REDUCED)
    runs["headsculpt-edit"] = launch_demo(
        test_headsculpt.EDIT_RECIPE, out / "headsculpt-edit", f"source={runs['headsculpt']}",
        f"edit_prompt={test_headsculpt.EDIT_PROMPT!r}", "stages.edit.guidance.edit_scale=0.5",
        *test_headsculpt.EDIT_REDUCED)
    runs["headartist"] = launch_demo(test_headartist.RECIPE, out / "headartist", *test_headartist.REDUCED)
    runs["headartist-edit"] = launch_demo(
        test_headartist_edit.EDIT_RECIPE, out / "headartist-edit", f"source={runs['headartist']}",
        f'edit_prompt="{test_headartist_edit.EDIT}"', *test_headartist_edit.EDIT_REDUCED)
    return runs


def _tensor_hashes(run: Path, tmp: str) -> dict[str, str]:
    import torch
    from safetensors.torch import load_file

    hashes: dict[str, str] = {}
    for path in sorted((run / "stages").glob("*/result.safetensors")):
        for key, tensor in sorted(load_file(str(path)).items()):
            data = tensor.contiguous().cpu().numpy().tobytes()
            if tensor.dtype == torch.uint8:  # JSON notes (e.g. hair_info) may name the temporary folder
                data = data.replace(tmp.encode(), b"<tmp>")
            hashes[f"{path.parent.name}/{key}"] = hashlib.sha256(data).hexdigest()[:16]
    return hashes


def record(path: Path) -> None:
    import torch

    torch.set_num_threads(1)
    start = time.time()
    snapshot: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, run in _runs(Path(tmp)).items():
            metrics = json.loads((run / "summary.json").read_text())["metrics"]
            kept = {k: re.sub(r"@\d{8}-\d{6}", "@<time>", v.replace(tmp, "<tmp>")) if isinstance(v, str) else v
                    for k, v in metrics.items() if not any(t in k for t in TIMING)}
            snapshot[name] = {"metrics": kept, "tensors": _tensor_hashes(run, tmp)}
    path.write_text(json.dumps(snapshot, indent=1, sort_keys=True))
    counts = ", ".join(f"{n}: {len(s['metrics'])} metrics, {len(s['tensors'])} tensors" for n, s in snapshot.items())
    print(f"recorded {path} in {time.time() - start:.0f} s ({counts})")


def compare(before_path: Path, after_path: Path) -> int:
    before, after = (json.loads(p.read_text()) for p in (before_path, after_path))
    differences = 0
    for run in sorted(set(before) | set(after)):
        for part in ("metrics", "tensors"):
            old, new = before.get(run, {}).get(part, {}), after.get(run, {}).get(part, {})
            for key in sorted(set(old) | set(new)):
                if old.get(key) != new.get(key):
                    differences += 1
                    print(f"{run} {part} {key}: {old.get(key, '(missing)')} -> {new.get(key, '(missing)')}")
            same = sum(old.get(k) == new.get(k) for k in set(old) | set(new))
            print(f"{run}: {part} {same}/{len(set(old) | set(new))} identical")
    print("behaviour unchanged" if differences == 0 else f"{differences} differences")
    return 1 if differences else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    rec = sub.add_parser("record", help="run the reduced recipes and write their metrics and tensor hashes")
    rec.add_argument("out", type=Path)
    cmp = sub.add_parser("compare", help="compare two recorded files; exit 1 on any difference")
    cmp.add_argument("before", type=Path)
    cmp.add_argument("after", type=Path)
    args = parser.parse_args()
    if args.command == "record":
        record(args.out)
        return 0
    return compare(args.before, args.after)


if __name__ == "__main__":
    raise SystemExit(main())
