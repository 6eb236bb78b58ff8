"""The built-in head's anatomy: feature positions and the implicit surface they define.

Units and placement (shared by every module of the generator and documented in
:mod:`headgen.heads.builtin`): one unit is the head height, chin (menton) to crown (vertex),
about 23 cm on a real adult. y is up, the face looks toward +z, the subject's left is +x. The
origin is on the midline at eye level (pupils at y = 0), halfway between the forehead and the back
of the head, so the head spans y in [-0.52, 0.50] and the neck hangs below to y = -0.95.

Proportions follow adult averages (interpupillary 6.3 cm, eye fissure 3 cm, mouth 5 cm, nose
5 cm long, ears 6.3 cm at brow-to-nose-base height). The face is written as a smooth union of
ellipsoids and round cones with carved eye sockets, eyeballs under lids with an almond opening,
lips with a crease, nostrils and ears; :mod:`headgen.heads.procedural.mesh` turns it into a mesh.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from headgen.heads.procedural.sdf import (
    ellipsoid,
    local,
    rot_x,
    rot_y,
    round_cone,
    smax,
    smin,
    smoothstep,
    sphere,
    tube,
)

# Centre of the ray fan that parameterises the mesh (inside the head, between ears and throat).
RAY_CENTER = np.array([0.0, -0.24, -0.02])

NECK_BOTTOM = -0.95

# --- eyes -------------------------------------------------------------------------------------
EYE_X = 0.137
EYE_Y = 0.0
EYE_RADIUS = 0.052
EYE_Z = 0.316  # eyeball centre; the cornea apex is at EYE_Z + EYE_RADIUS
LID_THICKNESS = 0.011
CANTHUS_IN = (0.079, -0.001)  # (x, y) of the inner eye corner (subject's left eye; mirror for right)
CANTHUS_OUT = (0.195, 0.007)
LID_UP = 0.020  # opening above the corner line at its highest
LID_DOWN = 0.013


def lid_curves(s: np.ndarray, blink_up: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Eye opening of the subject's left eye at parameter ``s`` in [0, 1] (inner -> outer corner).

    Returns ``(x, y_upper, y_lower)``: the lid margins seen from the front.
    """
    s = np.clip(np.asarray(s, dtype=float), 0.0, 1.0)
    x = CANTHUS_IN[0] + (CANTHUS_OUT[0] - CANTHUS_IN[0]) * s
    base = CANTHUS_IN[1] + (CANTHUS_OUT[1] - CANTHUS_IN[1]) * s
    # Skewed arches: the upper lid peaks a little toward the nose, the lower lid toward the temple.
    su = s ** 0.85
    sl = s ** 1.15
    up = LID_UP * np.sin(np.pi * su) ** 0.8
    down = LID_DOWN * np.sin(np.pi * sl) ** 0.9
    return x, base + up * (1.0 - blink_up), base - down


def _almond(p: np.ndarray) -> np.ndarray:
    """Pseudo distance (negative inside) to the eye opening prism of the eye on p's side."""
    ax = np.abs(p[:, 0])
    s = (ax - CANTHUS_IN[0]) / (CANTHUS_OUT[0] - CANTHUS_IN[0])
    _, yu, yl = lid_curves(s)
    half = 0.5 * (CANTHUS_OUT[0] - CANTHUS_IN[0])
    mid = 0.5 * (CANTHUS_OUT[0] + CANTHUS_IN[0])
    d = np.maximum(np.maximum(p[:, 1] - yu, yl - p[:, 1]), np.abs(ax - mid) - half)
    return 0.6 * d


# --- mouth ------------------------------------------------------------------------------------
MOUTH_Y = -0.300
MOUTH_HALF_WIDTH = 0.107
MOUTH_Z = 0.432  # depth of the lip crease on the midline


def mouth_line(x: np.ndarray) -> np.ndarray:
    """Height of the lip crease (stomion line) at ``x``."""
    t = np.clip(np.abs(x) / MOUTH_HALF_WIDTH, 0.0, 1.0)
    return MOUTH_Y - 0.002 * t * t


def upper_lip_border(x: np.ndarray) -> np.ndarray:
    """Height of the upper vermilion border (with the cupid's bow) at ``x``."""
    t = np.clip(np.abs(x) / MOUTH_HALF_WIDTH, 0.0, 1.0)
    arch = 0.040 * (1.0 - t ** 1.6)  # lip height above the crease, shrinking to 0 at the corner
    bow = 0.0045 * np.exp(-((t - 0.30) / 0.13) ** 2) - 0.003 * np.exp(-(t / 0.10) ** 2)
    return mouth_line(x) + arch + bow


def lower_lip_border(x: np.ndarray) -> np.ndarray:
    """Height of the lower vermilion border at ``x``."""
    t = np.clip(np.abs(x) / MOUTH_HALF_WIDTH, 0.0, 1.0)
    return mouth_line(x) - 0.047 * (1.0 - t ** 2.2) ** 0.9


def lip_depth(x: np.ndarray) -> np.ndarray:
    """How far forward the lips reach at ``x`` (front of the upper lip)."""
    t = np.clip(np.abs(x) / MOUTH_HALF_WIDTH, 0.0, 1.0)
    return MOUTH_Z + 0.022 - 0.060 * t ** 2


# --- nose -------------------------------------------------------------------------------------
NASION = np.array([0.0, 0.030, 0.415])
NOSE_TIP = np.array([0.0, -0.135, 0.520])
SUBNASALE = np.array([0.0, -0.205, 0.452])
ALA_X = 0.066

# --- ears -------------------------------------------------------------------------------------
EAR_CENTER = np.array([0.345, -0.060, -0.030])  # left ear; mirror x for the right one
EAR_HALF_HEIGHT = 0.135
EAR_HALF_WIDTH = 0.075

# --- chin / jaw -------------------------------------------------------------------------------
CHIN = np.array([0.0, -0.522, 0.385])  # menton, the lowest front point of the chin
GONION = np.array([0.225, -0.370, -0.010])  # jaw angle (left)
JAW_PIVOT = np.array([0.0, -0.110, -0.060])  # hinge axis of jawOpen (through both TMJs)


@dataclass(frozen=True)
class Shape:
    """Parameters of the implicit head (the defaults are the neutral built-in head)."""

    neck_radius: float = 0.232
    neck_depth: float = 0.218


def _mirror(p: np.ndarray) -> np.ndarray:
    """Points folded onto the subject's left half (x >= 0) for symmetric features."""
    q = p.copy()
    q[:, 0] = np.abs(q[:, 0])
    return q


def _column(q: np.ndarray, half_width: np.ndarray, centre_z: float, depth: np.ndarray,
            n: float) -> np.ndarray:
    """A vertical column with superelliptic cross-section (exponent ``n``) varying with height."""
    r = (np.abs(q[:, 0] / half_width) ** n + np.abs((q[:, 2] - centre_z) / depth) ** n) ** (1.0 / n)
    return (r - 1.0) * np.minimum(half_width, depth)


def head_sdf(p: np.ndarray, shape: Shape | None = None) -> np.ndarray:
    """Signed distance estimate of the head-and-neck at points ``p [N,3]`` (negative inside)."""
    shape = shape or Shape()
    q = _mirror(p)
    x, y, z = q[:, 0], q[:, 1], q[:, 2]

    # Cranium: an egg, narrower at the forehead than at the back, with a broad frontal bone.
    cq = q.copy()
    cq[:, 0] = x * (1.0 + 0.05 * np.clip(z / 0.43, -1.0, 1.0))
    d = ellipsoid(cq, (0.0, 0.13, -0.02), (0.325, 0.37, 0.430))
    d = smin(d, ellipsoid(q, (0.0, 0.22, -0.06), (0.30, 0.28, 0.36)), 0.06)
    d = smin(d, ellipsoid(q, (0.0, 0.11, 0.12), (0.305, 0.22, 0.29)), 0.05)
    d = smin(d, ellipsoid(q, (0.0, 0.04, -0.17), (0.285, 0.32, 0.27)), 0.06)

    # Face: a column with a rounded-box section, cut below by the tilted plane of the jaw line.
    w = 0.278 + 0.022 * smoothstep(-0.45, -0.05, y)
    col = _column(q, w, 0.10, 0.300 + 0.0 * y, 2.5)
    col = smax(col, y - 0.02, 0.10)
    # The jaw line seen from the front is close to y = -0.522 + 1.9 x^2, receding as it rises.
    y_jaw = -0.525 + 1.9 * x * x - 0.15 * (z - 0.37)
    jaw = (y_jaw - y) / np.sqrt(1.0 + (3.8 * x) ** 2 + 0.15 ** 2)
    lower = smax(col, jaw, 0.03)
    # Chin: a soft forward mound at the bottom of the face.
    lower = smin(lower, ellipsoid(q, (0.0, -0.462, 0.345), (0.075, 0.058, 0.068)), 0.04)
    mid = ellipsoid(q, (0.0, -0.09, 0.15), (0.31, 0.24, 0.25))
    mid = smin(mid, ellipsoid(q, (0.238, -0.075, 0.222), (0.07, 0.045, 0.09), rot_y(38.0)), 0.04)
    face = smin(mid, lower, 0.05)
    muzzle = ellipsoid(q, (0.0, -0.272, 0.322), (0.105, 0.10, 0.125))
    face = smin(face, muzzle, 0.04)
    d = smin(d, face, 0.06)
    # Mastoid and the top of the sternocleidomastoid: the head stays wide below and behind the ear.
    d = smin(d, ellipsoid(q, (0.215, -0.20, -0.085), (0.085, 0.13, 0.10), rot_x(-20.0)), 0.05)

    # Local features, each evaluated only near its bounding box.
    d = smin(d, local(q, (0.0, -0.215, 0.37), (0.085, 0.06, 0.535), _nose), 0.02)
    d = smax(d, -local(q, (0.07, -0.06, 0.33), (0.22, 0.05, 0.44), _socket), 0.025)
    d = smin(d, local(q, (0.0, 0.02, 0.24), (0.27, 0.12, 0.42), _brow), 0.04)
    d = smin(d, local(q, (0.08, -0.06, 0.25), (0.20, 0.065, 0.385), _eye), 0.014)
    front = (np.abs(x) < 0.25) & (y > -0.45) & (y < -0.12) & (z > 0.2)
    if front.any():
        d[front] = _lips(q[front], d[front] - _stamps(q[front]))
    d = smin(d, local(q, (0.25, -0.26, -0.18), (0.44, 0.13, 0.11), _ear), 0.035)

    # Neck: an elliptic column, its base a little forward of its top, flaring toward the shoulders.
    centre_z = -0.065 - 0.05 * (y + 0.3)
    flare = 1.0 + 0.10 * smoothstep(-0.75, -0.98, y)
    neck = np.sqrt((x / (shape.neck_radius * flare)) ** 2 + ((z - centre_z) / shape.neck_depth) ** 2)
    neck = (neck - 1.0) * min(shape.neck_radius, shape.neck_depth)
    neck = smax(neck, y + 0.22, 0.06)
    d = smin(d, neck, 0.05)
    return smax(d, NECK_BOTTOM - y, 0.04)


def _gauss(v: np.ndarray) -> np.ndarray:
    return np.exp(-v * v)


def _stamps(q: np.ndarray) -> np.ndarray:
    """Small outward offsets (positive = bulge) of facial details, as frontal height fields."""
    x, y, z = q[:, 0], q[:, 1], q[:, 2]
    front = smoothstep(0.15, 0.30, z)
    out = np.zeros(len(q))
    # Nasolabial folds: a soft ridge of cheek beside a crease from the nose wing to the mouth corner.
    a = np.array([0.080, -0.172])
    b = np.array([0.130, -0.318])
    ab = b - a
    h = np.clip(((x - a[0]) * ab[0] + (y - a[1]) * ab[1]) / float(ab @ ab), 0.0, 1.0)
    side = (x - a[0]) * ab[1] - (y - a[1]) * ab[0]  # signed distance-ish, > 0 toward the cheek
    side = side / float(np.linalg.norm(ab))
    along = np.sin(np.pi * h) ** 0.8
    out += 0.004 * along * _gauss((side + 0.016) / 0.016)
    out -= 0.0015 * along * _gauss(side / 0.008)
    # Philtrum: two soft columns from the nose base to the upper lip.
    band = smoothstep(-0.272, -0.256, y) * smoothstep(-0.195, -0.213, y)
    out += 0.0025 * band * _gauss((x - 0.013) / 0.007)
    # Mentolabial sulcus: the groove between the lower lip and the chin.
    out -= 0.007 * _gauss((y + 0.383) / 0.014) * _gauss(x / 0.06)
    return out * front


def _lips(q: np.ndarray, d: np.ndarray) -> np.ndarray:
    x, y, z = q[:, 0], q[:, 1], q[:, 2]
    t = np.clip(x / MOUTH_HALF_WIDTH, 0.0, 1.0)
    ym = mouth_line(x)
    yu = upper_lip_border(x)
    yl = lower_lip_border(x)
    taper = np.clip(1.0 - t ** 2, 0.0, 1.0) ** 0.7
    # Vermilion as a height field on the muzzle: rounded rolls with soft-but-defined borders.
    edge = 0.0025
    inside_u = smoothstep(-edge, edge, y - ym) * smoothstep(-edge, edge, yu - y)
    inside_l = smoothstep(-edge, edge, ym - y) * smoothstep(-edge, edge, y - yl)
    su = np.clip((y - ym) / np.maximum(yu - ym, 1e-4), 0.0, 1.0)
    sl = np.clip((ym - y) / np.maximum(ym - yl, 1e-4), 0.0, 1.0)
    upper = inside_u * (0.45 + 0.55 * np.sin(np.pi * np.clip(su * 1.1, 0, 1)) ** 0.5) * 0.010
    lower = inside_l * (0.45 + 0.55 * np.sin(np.pi * sl ** 0.9) ** 0.5) * 0.013
    bulge = (upper + lower) * taper * smoothstep(0.2, 0.32, z)
    d = d - bulge
    # The crease between the lips, fading out past the corners.
    crease = _gauss((y - ym) / 0.0045) * smoothstep(MOUTH_HALF_WIDTH + 0.012, MOUTH_HALF_WIDTH - 0.012, x)
    return d + 0.010 * crease * smoothstep(0.25, 0.35, z)


def _nose(q: np.ndarray) -> np.ndarray:
    dorsum = round_cone(q, (0.0, 0.035, 0.392), (0.0, -0.112, 0.488), 0.019, 0.019)
    body = ellipsoid(q, (0.0, -0.125, 0.425), (0.046, 0.072, 0.052), rot_x(-18.0))
    nose = smin(dorsum, body, 0.025)
    tip = ellipsoid(q, (0.0, -0.137, 0.488), (0.044, 0.028, 0.032))
    nose = smin(nose, tip, 0.018)
    ala = ellipsoid(q, (0.044, -0.163, 0.438), (0.023, 0.020, 0.026), rot_y(30.0))
    nose = smin(nose, ala, 0.02)
    columella = round_cone(q, (0.0, -0.152, 0.49), (0.0, -0.197, 0.452), 0.009, 0.010)
    nose = smin(nose, columella, 0.012)
    nostril = ellipsoid(q, (0.022, -0.183, 0.466), (0.010, 0.006, 0.016), rot_y(-20.0))
    return smax(nose, -nostril, 0.008)


def _socket(q: np.ndarray) -> np.ndarray:
    return ellipsoid(q, (EYE_X + 0.006, EYE_Y - 0.004, EYE_Z + 0.070), (0.070, 0.050, 0.050))


def _brow(q: np.ndarray) -> np.ndarray:
    return tube(q, np.array([[0.030, 0.082, 0.392], [0.105, 0.088, 0.378], [0.185, 0.074, 0.335],
                             [0.245, 0.045, 0.272]]), np.array([0.020, 0.020, 0.018, 0.014]), 0.02)


def _eye(q: np.ndarray) -> np.ndarray:
    """Eyeball under lids: a shell around the ball with the almond-shaped opening cut out."""
    eye_c = np.array([EYE_X, EYE_Y, EYE_Z])
    ball = sphere(q, eye_c, EYE_RADIUS)
    lid = smax(sphere(q, eye_c, EYE_RADIUS + LID_THICKNESS), -_almond(q), 0.003)
    return smin(ball, lid, 0.002)


def _ear(q: np.ndarray) -> np.ndarray:
    c = EAR_CENTER
    # The ear plane flares out toward the back and leans back at the top.
    frame = rot_y(-4.0) @ rot_x(-12.0)
    local_p = (q - c) @ frame
    shell = ellipsoid(local_p, (-0.014, 0.0, -0.004), (0.044, EAR_HALF_HEIGHT, EAR_HALF_WIDTH))
    # Hollow of the outer ear (concha + scapha), leaving the helix rim.
    bowl = ellipsoid(local_p, (0.038, -0.008, 0.006), (0.030, EAR_HALF_HEIGHT * 0.80, EAR_HALF_WIDTH * 0.72))
    ear = smax(shell, -bowl, 0.012)
    concha = ellipsoid(local_p, (0.022, -0.030, 0.016), (0.022, 0.042, 0.030))
    ear = smax(ear, -concha, 0.010)
    lobe = ellipsoid(local_p, (0.004, -0.102, -0.006), (0.016, 0.036, 0.032))
    ear = smin(ear, lobe, 0.012)
    tragus = ellipsoid(local_p, (0.010, -0.030, 0.060), (0.014, 0.020, 0.014))
    ear = smin(ear, tragus, 0.008)
    # The back of the ear slopes into the skull (seen from behind it is not a thin fin).
    root = ellipsoid(local_p, (-0.040, -0.02, -0.045), (0.045, EAR_HALF_HEIGHT * 0.85, EAR_HALF_WIDTH * 0.9))
    return smin(ear, root, 0.03)


def detail_region(points: np.ndarray) -> np.ndarray:
    """Where the mesh is refined: eyes and lids, nose, lips and ears (bool per point)."""
    x, y, z = np.abs(points[:, 0]), points[:, 1], points[:, 2]
    eyes = (x > 0.055) & (x < 0.225) & (y > -0.045) & (y < 0.05) & (z > 0.25)
    nose = (x < 0.085) & (y > -0.215) & (y < -0.08) & (z > 0.38)
    lips = (x < 0.13) & (y > -0.37) & (y < -0.24) & (z > 0.3)
    ears = (x > 0.26) & (y > -0.25) & (y < 0.11) & (z > -0.2) & (z < 0.08)
    return eyes | nose | lips | ears


def pinned_region(points: np.ndarray) -> np.ndarray:
    """Vertices that relaxation must not move: the rim of the flat neck cap."""
    return points[:, 1] < NECK_BOTTOM + 0.05
