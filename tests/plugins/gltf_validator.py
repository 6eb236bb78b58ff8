"""The Khronos glTF validator (npm ``gltf-validator``) run through node, for tests.

Installed on first use (npm, about a second) into ``$GLTF_VALIDATOR_DIR``, default
``~/.cache/headgen-tests/gltf-validator`` (kept between test runs: a tool, not a result).
:func:`validate_glb` answers None when node or npm is missing or the install fails, so a test
checks nothing there rather than failing on a machine without them.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from npm_tools import npm_tool_dir

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
    return npm_tool_dir("gltf-validator", VERSION, "GLTF_VALIDATOR_DIR", "gltf-validator", "validate.js", SCRIPT)


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
