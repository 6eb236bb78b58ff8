"""The Khronos glTF validator (npm ``gltf-validator``) run through node, for tests.

Installed on first use (npm, about a second) into ``$GLTF_VALIDATOR_DIR``, default
``~/.cache/headgen-tests/gltf-validator`` (kept between test runs: a tool, not a result).
:func:`validate_glb` answers None when node or npm is missing or the install fails, so a test
checks nothing there rather than failing on a machine without them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

VERSION = "2.0.0-dev.3.10"
SCRIPT = """
const fs = require('fs');
const validator = require('gltf-validator');
validator.validateBytes(new Uint8Array(fs.readFileSync(process.argv[2]))).then((r) => {
  const bad = r.issues.messages.filter((m) => m.severity <= 1).slice(0, 20);
  console.log(JSON.stringify({errors: r.issues.numErrors, warnings: r.issues.numWarnings,
                              messages: bad.map((m) => `${m.code} ${m.pointer}: ${m.message}`)}));
}).catch((e) => { console.error(String(e)); process.exit(1); });
"""


def validator_dir() -> Path | None:
    """A folder with node_modules/gltf-validator (installed on first use), or None."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        return None
    default = Path.home() / ".cache" / "headgen-tests" / "gltf-validator"
    root = Path(os.environ.get("GLTF_VALIDATOR_DIR", default))
    if not (root / "node_modules" / "gltf-validator").is_dir():
        root.mkdir(parents=True, exist_ok=True)
        try:
            subprocess.run(["npm", "install", "--prefix", str(root), f"gltf-validator@{VERSION}"], check=True,
                           capture_output=True, timeout=300)
        except (subprocess.SubprocessError, OSError):
            return None
    (root / "validate.js").write_text(SCRIPT)
    return root


def validate_glb(path: Path) -> dict[str, Any] | None:
    """``{"errors", "warnings", "messages"}`` from the validator, or None when it is unavailable."""
    root = validator_dir()
    if root is None:
        return None
    run = subprocess.run(["node", str(root / "validate.js"), str(path)], capture_output=True, text=True, timeout=300,
                         cwd=root)
    if run.returncode != 0:
        raise RuntimeError(f"gltf-validator failed on {path}: {run.stderr[-2000:]}")
    return json.loads(run.stdout)
