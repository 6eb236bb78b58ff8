"""The README's viewer screenshot: a finished run in ``launch.py --view``'s viewer, photographed by
headless Chromium (Debian's chromium + chromium-driver, driven by selenium).

    python scripts/viewer_screenshot.py RUN_DIR [--out docs/viewer.png] [--expression Smile]

It opens the run, sets every expression whose name contains ``--expression`` to 0.8 (to show the
sliders at work), opens the expressions folder, waits until the picture is still, and saves it.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "plugins"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", help="a finished run directory")
    p.add_argument("--out", default=str(ROOT / "docs" / "viewer.png"))
    p.add_argument("--expression", default="Smile", help="set expressions whose name contains this to 0.8")
    p.add_argument("--port", type=int, default=8190)
    p.add_argument("--size", default="1280x800", help="browser window WIDTHxHEIGHT")
    args = p.parse_args(argv)
    import imageio.v3 as iio
    from browser import chromium, screenshot

    from headgen.viewer.app import open_viewer

    width, height = (int(v) for v in args.size.split("x"))
    server, viewer = open_viewer(args.run, port=args.port, log=lambda _: None)
    try:
        with chromium(width, height) as driver:
            driver.get(f"http://127.0.0.1:{args.port}")
            time.sleep(3.0)
            if viewer.head is not None and args.expression:
                weights = np.array([0.8 if args.expression.lower() in n.lower() else 0.0
                                    for n in viewer.head.target_names])
                viewer.set_weights(weights)
                print(f"expressions at 0.8: {[n for n, w in zip(viewer.head.target_names, weights) if w]}")
            driver.execute_script(  # the "software WebGL" notice of a GPU-less browser is not the product
                "document.querySelectorAll('.mantine-Notification-root').forEach(e => e.remove());")
            previous, still = None, 0
            for _ in range(60):
                time.sleep(0.5)
                img = screenshot(driver)
                still = still + 1 if previous is not None and np.abs(img.astype(int) - previous).mean() < 0.05 else 0
                previous = img.astype(int)
                if still >= 3:
                    break
            out = Path(args.out)
            out.parent.mkdir(parents=True, exist_ok=True)
            iio.imwrite(out, img)
            print(f"wrote {out} ({img.shape[1]}x{img.shape[0]})")
    finally:
        viewer.close()
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
