"""npm packages for the tests' real clients (the glTF validator, three.js), run through node."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path


def npm_tool_dir(package: str, version: str, env_var: str, default: str, script_name: str, script: str
                 ) -> Path | None:
    """A folder with node_modules/``package`` (installed on first use into ``$env_var``, default
    ``~/.cache/headgen-tests/<default>``, kept between test runs: a tool, not a result) and
    ``script_name`` written into it; None when node or npm is missing or the install fails, so a
    test checks nothing there rather than failing on a machine without them."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        return None
    root = Path(os.environ.get(env_var, Path.home() / ".cache" / "headgen-tests" / default))
    if not (root / "node_modules" / package).is_dir():
        root.mkdir(parents=True, exist_ok=True)
        try:
            subprocess.run(["npm", "install", "--prefix", str(root), f"{package}@{version}"], check=True,
                           capture_output=True, timeout=300)
        except (subprocess.SubprocessError, OSError):
            return None
    (root / script_name).write_text(script)
    return root
