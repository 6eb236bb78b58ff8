"""three.js (npm ``three``) playing a GLB's animation clip in node, for tests.

GLTFLoader parses the file (textures stubbed: node has no DOM, and the clip does not need them),
an AnimationMixer plays the first clip, and the morph-target influences of every mesh (and the
``root`` node's rotation) are read at the times asked. Installed on first use into
``$THREEJS_DIR``, default ``~/.cache/headgen-tests/three``; :func:`play_glb` answers None when node
or npm is missing or the install fails, as the validator helper does.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from npm_tools import npm_tool_dir

VERSION = "0.170.0"
SCRIPT = """// Load a GLB with three.js's GLTFLoader in Node (textures stubbed: no DOM) and play its first clip.
import fs from 'node:fs';
globalThis.self = globalThis;
globalThis.createImageBitmap = async () => ({ width: 1, height: 1, close() {} });
const THREE = await import('three');
const { GLTFLoader } = await import('three/examples/jsm/loaders/GLTFLoader.js');
THREE.ImageBitmapLoader.prototype.load = function (url, onLoad) { onLoad({ width: 1, height: 1, close() {} }); };
const [file, ...times] = process.argv.slice(2);
const data = fs.readFileSync(file);
const buffer = data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength);
new GLTFLoader().parse(buffer, '', (gltf) => {
  const clip = gltf.animations[0];
  const mixer = new THREE.AnimationMixer(gltf.scene);
  mixer.clipAction(clip).play();
  const out = { clip: clip ? clip.name : null, duration: clip ? clip.duration : 0,
                tracks: clip ? clip.tracks.length : 0, frames: [] };
  let now = 0;
  for (const t of times.map(Number)) {
    mixer.update(t - now); now = t;
    const frame = { t, meshes: {} };
    gltf.scene.traverse((o) => {
      if (o.isMesh && o.morphTargetInfluences) {
        frame.meshes[o.name] = { dict: o.morphTargetDictionary, w: Array.from(o.morphTargetInfluences) };
      }
      if (o.name === 'root') frame.root = o.quaternion.toArray();
    });
    out.frames.push(frame);
  }
  process.stdout.write(JSON.stringify(out));
}, (err) => { console.error(String(err)); process.exit(1); });
"""


def player_dir() -> Path | None:
    return npm_tool_dir("three", VERSION, "THREEJS_DIR", "three", "play.mjs", SCRIPT)


def play_glb(path: Path, times: list[float]) -> dict[str, Any] | None:
    """``{"clip", "duration", "tracks", "frames": [{"t", "meshes": {name: {"dict", "w"}}, "root"?}]}``."""
    root = player_dir()
    if root is None:
        return None
    run = subprocess.run(["node", str(root / "play.mjs"), str(path), *map(str, times)], capture_output=True,
                         text=True, timeout=300, cwd=root)
    if run.returncode != 0:
        raise RuntimeError(f"three.js could not play {path}: {run.stderr[-2000:]}")
    return json.loads(run.stdout)
