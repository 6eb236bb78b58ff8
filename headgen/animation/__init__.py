"""Expression animation: ARKit names and their mapping onto a head's blendshapes, Live Link Face
performance files, and clips (times and morph weights) for head.glb and animation.mp4."""
