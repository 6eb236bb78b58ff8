"""The 52 ARKit blendshapes and how they map onto a head model's expression names.

ARKit names are camelCase with ``Left`` / ``Right`` suffixes (``eyeBlinkLeft``); Live Link Face
writes them in PascalCase (``EyeBlinkLeft``). Head models name them their own way: ICT-FaceKit and
the built-in head use ``_L`` / ``_R`` (``eyeBlink_L``), ICT-FaceKit splits ``browInnerUp`` and
``cheekPuff`` into left and right shapes, has no ``tongueOut`` and adds ``cheekRaiser_L/_R`` and
``PupilDilate_L/_R``. The mapping, tried in order for each ARKit name:

1. the same name (``jawOpen`` -> ``jawOpen``);
2. ``Left`` / ``Right`` -> ``_L`` / ``_R`` (``eyeBlinkLeft`` -> ``eyeBlink_L``);
3. a centre shape split in two: both ``_L`` and ``_R`` get the weight (``cheekPuff`` ->
   ``cheekPuff_L`` + ``cheekPuff_R``);
4. otherwise unmapped (reported once; ICT-FaceKit: ``tongueOut``).

``python -m headgen.animation.arkit [ict-facekit|builtin]`` prints the table for a head.
"""

from __future__ import annotations

import re

ARKIT_SHAPES: tuple[str, ...] = (
    "eyeBlinkLeft", "eyeLookDownLeft", "eyeLookInLeft", "eyeLookOutLeft", "eyeLookUpLeft", "eyeSquintLeft",
    "eyeWideLeft", "eyeBlinkRight", "eyeLookDownRight", "eyeLookInRight", "eyeLookOutRight", "eyeLookUpRight",
    "eyeSquintRight", "eyeWideRight", "jawForward", "jawRight", "jawLeft", "jawOpen", "mouthClose", "mouthFunnel",
    "mouthPucker", "mouthRight", "mouthLeft", "mouthSmileLeft", "mouthSmileRight", "mouthFrownLeft",
    "mouthFrownRight", "mouthDimpleLeft", "mouthDimpleRight", "mouthStretchLeft", "mouthStretchRight",
    "mouthRollLower", "mouthRollUpper", "mouthShrugLower", "mouthShrugUpper", "mouthPressLeft", "mouthPressRight",
    "mouthLowerDownLeft", "mouthLowerDownRight", "mouthUpperUpLeft", "mouthUpperUpRight", "browDownLeft",
    "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight", "cheekPuff", "cheekSquintLeft",
    "cheekSquintRight", "noseSneerLeft", "noseSneerRight", "tongueOut",
)
"""The 52 ARKit face blendshapes, in the order Live Link Face writes them."""


def camel(name: str) -> str:
    """``EyeBlinkLeft`` (Live Link Face) -> ``eyeBlinkLeft`` (ARKit)."""
    return name[:1].lower() + name[1:]


def head_targets(arkit: str, head_names: list[str] | tuple[str, ...]) -> list[str]:
    """The head's expression names that ``arkit`` drives (empty when unmapped)."""
    names = set(head_names)
    if arkit in names:
        return [arkit]
    side = re.fullmatch(r"(.+?)(Left|Right)", arkit)
    if side:
        split = f"{side.group(1)}_{side.group(2)[0]}"
        return [split] if split in names else []
    pair = [f"{arkit}_L", f"{arkit}_R"]
    return pair if all(p in names for p in pair) else []


def mapping(head_names: list[str] | tuple[str, ...]) -> dict[str, list[str]]:
    """{ARKit name: head names it drives} for all 52 (empty list: unmapped)."""
    return {a: head_targets(a, head_names) for a in ARKIT_SHAPES}


def undriven(head_names: list[str] | tuple[str, ...]) -> list[str]:
    """The head's expressions no ARKit shape drives (ICT-FaceKit: cheekRaiser_L/_R, PupilDilate_L/_R)."""
    driven = {n for targets in mapping(head_names).values() for n in targets}
    return [n for n in head_names if n not in driven]


def mapping_table(head_names: list[str] | tuple[str, ...]) -> str:
    rows = [f"{a:<20} -> {', '.join(t) if t else '(unmapped)'}" for a, t in mapping(head_names).items()]
    rest = undriven(head_names)
    if rest:
        rows.append(f"not driven by ARKit: {', '.join(rest)}")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    import argparse

    from headgen.heads import load_builtin_head, load_ict_facekit

    p = argparse.ArgumentParser(description="Print the ARKit -> head expression mapping.")
    p.add_argument("head", nargs="?", default="ict-facekit", choices=["ict-facekit", "builtin"])
    args = p.parse_args(argv)
    head = load_ict_facekit() if args.head == "ict-facekit" else load_builtin_head()
    print(mapping_table(head.expression_names))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
