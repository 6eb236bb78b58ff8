"""Head models: one interface (:class:`~headgen.heads.base.HeadModel`) for the built-in
procedural head, ICT-FaceKit and FLAME.

Registered as kind ``head``: ``builtin`` (:mod:`.builtin`), ``ict-facekit`` (:mod:`.ict`),
``flame`` (:mod:`.flame`). Each registered class has a ``Config`` and ``load() -> HeadModel``.
"""

from headgen.heads.base import NUM_MEDIAPIPE_LANDMARKS, HeadModel
from headgen.heads.builtin import BuiltinHead, load_builtin_head
from headgen.heads.flame import FlameHead, load_flame
from headgen.heads.ict import IctFaceKitHead, load_ict_facekit

__all__ = [
    "NUM_MEDIAPIPE_LANDMARKS",
    "BuiltinHead",
    "FlameHead",
    "HeadModel",
    "IctFaceKitHead",
    "load_builtin_head",
    "load_flame",
    "load_ict_facekit",
]
