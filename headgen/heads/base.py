"""The head-model interface shared by the built-in head, ICT-FaceKit and FLAME.

A :class:`HeadModel` is plain data (CPU torch tensors: float32 positions, int64 indices, bool
masks) plus the linear model

    T(beta, w) = v_template + sum_i beta_i S_i + sum_j w_j E_j

with identity modes ``S`` (``identity_basis [K,V,3]``, coefficients ~ N(0, 1)) and expression
blendshapes ``E`` (``expression_basis [E,V,3]``, weights usually in [0, 1], named by
``expression_names``). :meth:`HeadModel.vertices` and :meth:`HeadModel.landmarks` accept numpy
arrays or torch tensors and answer in kind; with tensors the result is on the input's device and
differentiable in the coefficients (the bases are copied once per device and dtype and cached).
Constructors accept numpy arrays or tensors.

A model may carry attached :class:`HeadPart` s (ICT-FaceKit's eyeballs, teeth, gums, lashes ...):
their own triangles over the same vertices, so identity and expressions move them, each with a
fixed material; ``faces`` is then the skin surface alone (what carving, textures and SDF
initialisation see) and ``carved`` says which vertices detail carving may displace.

Landmarks are embedded as (triangle, barycentric) pairs with the MediaPipe id each one stands for;
:meth:`HeadModel.landmarks_mediapipe` scatters them into the 478-point MediaPipe layout with NaN
where the model has no embedding. World conventions follow :mod:`headgen.cameras` (y up, the face
looks toward +z, the subject's left is +x).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from headgen.errors import HeadgenError, did_you_mean

NUM_MEDIAPIPE_LANDMARKS = 478
"""Points of MediaPipe's refined face mesh (468 face points + 2 x 5 iris points)."""

Coefficients = Any  # np.ndarray | torch.Tensor | dict[str, float] | None


@dataclass
class HeadPart:
    """A surface attached to a head model: triangles over the model's vertices and a fixed material."""

    name: str
    faces: Tensor
    """[F,3] int64 indices into the model's vertices (counter-clockwise seen from outside)."""
    color: tuple[float, float, float] = (0.5, 0.5, 0.5)
    """Base colour (linear-ish sRGB in [0,1], like the textures)."""
    roughness: float = 0.5
    vertex_colors: Tensor | None = None
    """[Vp,3] per-vertex colours over the part's own vertices (sorted, as :meth:`HeadModel.part_vertices`
    compacts them), in place of ``color`` (ICT's eyeballs: sclera, iris and pupil)."""
    alpha: float = 1.0
    """Below 1: an alpha-blended overlay (ICT's lacrimal fluid, eye blend, eye occlusion), exported
    with alpha blending; the opaque rasterizer does not draw it (it would hide what lies under it)."""

    def __post_init__(self) -> None:
        self.faces = _tensor(self.faces, torch.int64).reshape(-1, 3)
        if self.vertex_colors is not None:
            self.vertex_colors = _tensor(self.vertex_colors, torch.float32).reshape(-1, 3)
        self.color = tuple(float(c) for c in self.color)  # type: ignore[assignment]

    @property
    def drawn(self) -> bool:
        """Whether renders draw it (opaque parts only)."""
        return self.alpha >= 1.0


@dataclass
class HeadModel:
    """A linear head model: template, identity modes, expressions, landmarks, UVs and regions."""

    name: str
    v_template: Tensor
    """[V,3] float32 neutral (mean) vertices."""
    faces: Tensor
    """[F,3] int64 triangles (quads are split), counter-clockwise seen from outside."""
    identity_basis: Tensor
    """[K,V,3] float32 identity modes (one standard deviation each)."""
    expression_basis: Tensor
    """[E,V,3] float32 expression blendshapes (displacement at weight 1)."""
    expression_names: list[str]
    landmark_faces: Tensor
    """[L] int64 triangle of each embedded landmark."""
    landmark_bary: Tensor
    """[L,3] float32 barycentric coordinates in that triangle."""
    landmark_ids: Tensor
    """[L] int64 MediaPipe id each landmark stands for (0..477)."""
    uvs: Tensor | None = None
    """[T,2] float32 texture coordinates (separate from the vertices: seams allowed), or None."""
    uv_faces: Tensor | None = None
    """[F,3] int64 UV index of each face corner, or None."""
    regions: dict[str, Tensor] = field(default_factory=dict)
    """Named bool masks [V] (the built-in head: face, scalp, ears, neck)."""
    scale: float = 1.0
    """Head height (chin to crown) in model units."""
    units: str = ""
    """What one model unit is ("head height", "cm", "m")."""
    parts: list[HeadPart] = field(default_factory=list)
    """Attached surfaces with their own materials (empty for the built-in head and FLAME)."""
    carved: Tensor | None = None
    """[V] bool: vertices detail carving may displace (None: all)."""
    meta: dict[str, Any] = field(default_factory=dict)
    _torch: dict[Any, Any] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.v_template = _tensor(self.v_template, torch.float32)
        self.faces = _tensor(self.faces, torch.int64)
        V = self.v_template.shape[0]
        self.identity_basis = _tensor(self.identity_basis, torch.float32).reshape(-1, V, 3)
        self.expression_basis = _tensor(self.expression_basis, torch.float32).reshape(-1, V, 3)
        self.expression_names = [str(n) for n in self.expression_names]
        self.landmark_faces = _tensor(self.landmark_faces, torch.int64).reshape(-1)
        self.landmark_bary = _tensor(self.landmark_bary, torch.float32).reshape(-1, 3)
        self.landmark_ids = _tensor(self.landmark_ids, torch.int64).reshape(-1)
        if self.uvs is not None:
            self.uvs = _tensor(self.uvs, torch.float32)
            self.uv_faces = None if self.uv_faces is None else _tensor(self.uv_faces, torch.int64)
        self.regions = {k: _tensor(m, torch.bool) for k, m in self.regions.items()}
        self.carved = None if self.carved is None else _tensor(self.carved, torch.bool)
        self.validate()

    # -- sizes ------------------------------------------------------------------------------------
    @property
    def num_vertices(self) -> int:
        return int(self.v_template.shape[0])

    @property
    def num_faces(self) -> int:
        return int(self.faces.shape[0])

    @property
    def num_identity(self) -> int:
        return int(self.identity_basis.shape[0])

    @property
    def num_expression(self) -> int:
        return int(self.expression_basis.shape[0])

    @property
    def num_landmarks(self) -> int:
        return int(self.landmark_ids.shape[0])

    @property
    def has_uvs(self) -> bool:
        return self.uvs is not None

    def validate(self) -> None:
        """Check shapes and index ranges (raises HeadgenError naming the broken field)."""
        V, F = self.num_vertices, self.num_faces
        problems = []
        if self.v_template.ndim != 2 or self.v_template.shape[1] != 3:
            problems.append(f"v_template must be [V,3], got {self.v_template.shape}")
        if self.faces.ndim != 2 or self.faces.shape[1] != 3:
            problems.append(f"faces must be [F,3], got {self.faces.shape}")
        elif F and (self.faces.min() < 0 or self.faces.max() >= V):
            problems.append("faces index outside the vertices")
        if len(self.expression_names) != self.num_expression:
            problems.append(f"{len(self.expression_names)} expression names for {self.num_expression} shapes")
        L = self.num_landmarks
        if self.landmark_faces.shape[0] != L or self.landmark_bary.shape[0] != L:
            problems.append("landmark_faces / landmark_bary / landmark_ids lengths differ")
        elif L and (self.landmark_faces.min() < 0 or self.landmark_faces.max() >= F):
            problems.append("landmark_faces index outside the faces")
        if L and (self.landmark_ids.min() < 0 or self.landmark_ids.max() >= NUM_MEDIAPIPE_LANDMARKS):
            problems.append(f"landmark_ids must be MediaPipe ids in [0, {NUM_MEDIAPIPE_LANDMARKS})")
        if self.uvs is not None:
            if self.uv_faces is None or self.uv_faces.shape != self.faces.shape:
                problems.append("uv_faces must be [F,3] like faces")
            elif F and (self.uv_faces.min() < 0 or self.uv_faces.max() >= len(self.uvs)):
                problems.append("uv_faces index outside the uvs")
        for k, m in self.regions.items():
            if tuple(m.shape) != (V,):
                problems.append(f"region '{k}' mask must be [V], got {tuple(m.shape)}")
        for part in self.parts:
            if part.faces.numel() and (part.faces.min() < 0 or part.faces.max() >= V):
                problems.append(f"part '{part.name}' faces index outside the vertices")
            elif part.vertex_colors is not None and len(part.vertex_colors) != int(torch.unique(part.faces).numel()):
                problems.append(f"part '{part.name}' vertex_colors must have one row per vertex its faces use")
        if len({p.name for p in self.parts}) != len(self.parts):
            problems.append("part names must be unique")
        if self.carved is not None and tuple(self.carved.shape) != (V,):
            problems.append(f"carved mask must be [V], got {tuple(self.carved.shape)}")
        if not torch.isfinite(self.v_template).all():
            problems.append("v_template has non-finite values")
        if problems:
            raise HeadgenError(f"head model '{self.name}' is malformed: " + "; ".join(problems))

    # -- evaluation -------------------------------------------------------------------------------
    def expression_vector(self, weights: dict[str, float]) -> Tensor:
        """Dense expression weights [E] from ``{name: weight}`` (unknown names raise)."""
        out = torch.zeros(self.num_expression)
        index = {n: i for i, n in enumerate(self.expression_names)}
        for name, w in weights.items():
            if name not in index:
                raise HeadgenError(
                    f"head model '{self.name}' has no expression '{name}'{did_you_mean(name, index)}; "
                    f"it has: {', '.join(self.expression_names) or '(none)'}"
                )
            out[index[name]] = float(w)
        return out

    def _arrays(self, device: Any, dtype: Any) -> tuple[Tensor, Tensor, Tensor]:
        key = (str(device), dtype)
        if key not in self._torch:
            self._torch[key] = (
                self.v_template.to(device=device, dtype=dtype),
                self.identity_basis.to(device=device, dtype=dtype),
                self.expression_basis.to(device=device, dtype=dtype),
            )
        return self._torch[key]

    def vertices(self, beta: Coefficients = None, expression: Coefficients = None) -> Any:
        """Vertices ``T = v_template + beta . S + w . E``.

        ``beta``: identity coefficients [K'] or [B,K'] with K' <= num_identity (missing ones are
        0). ``expression``: weights [E'] or [B,E'], or ``{name: weight}``. Returns [V,3] or [B,V,3]:
        numpy float32 if the coefficients were numpy/lists, else a tensor on their device
        (differentiable in them).
        """
        if isinstance(expression, dict):
            expression = self.expression_vector(expression)
        given = beta is not None or expression is not None
        as_numpy = given and not (_is_tensor(beta) or _is_tensor(expression))
        ref = beta if _is_tensor(beta) else expression if _is_tensor(expression) else None
        device = ref.device if ref is not None else torch.device("cpu")
        dtype = ref.dtype if ref is not None and ref.dtype.is_floating_point else torch.float32
        T, S, E = self._arrays(device, dtype)
        out = T.clone()
        if beta is not None:
            b = torch.as_tensor(beta if _is_tensor(beta) else np.asarray(beta), device=device, dtype=dtype)
            n = self._check_len(b, self.num_identity, "identity")
            out = out + torch.einsum("...k,kvc->...vc", b, S[:n])
        if expression is not None:
            w = torch.as_tensor(np.asarray(expression) if not _is_tensor(expression) else expression,
                                device=device, dtype=dtype)
            n = self._check_len(w, self.num_expression, "expression")
            out = out + torch.einsum("...k,kvc->...vc", w, E[:n])
        return out.numpy() if as_numpy else out

    def _check_len(self, c: Tensor, available: int, what: str) -> int:
        if c.ndim not in (1, 2):
            raise HeadgenError(f"{what} coefficients must be [K] or [B,K], got shape {tuple(c.shape)}")
        n = int(c.shape[-1])
        if n > available:
            raise HeadgenError(
                f"head model '{self.name}' has {available} {what} components, got {n} coefficients"
            )
        return n

    def landmarks(self, vertices: Any = None) -> Any:
        """Embedded landmark positions [..., L, 3] of ``vertices [..., V, 3]`` (template if None);
        numpy in, numpy out."""
        if vertices is None:
            vertices = self.v_template
        as_numpy = not _is_tensor(vertices)
        v = torch.as_tensor(np.asarray(vertices)) if as_numpy else vertices
        idx = self.faces[self.landmark_faces].to(v.device)
        bary = self.landmark_bary.to(device=v.device, dtype=v.dtype)
        out = (v[..., idx, :] * bary[..., None]).sum(-2)  # [..., L, 3, 3] -> [..., L, 3]
        return out.numpy() if as_numpy else out

    def landmarks_mediapipe(self, vertices: Any = None) -> Any:
        """Landmarks scattered into MediaPipe's layout [..., 478, 3]; NaN rows where not embedded."""
        as_numpy = vertices is not None and not _is_tensor(vertices)
        lm = self.landmarks(None if vertices is None else torch.as_tensor(np.asarray(vertices))
                            if as_numpy else vertices)
        shape = tuple(lm.shape[:-2]) + (NUM_MEDIAPIPE_LANDMARKS, 3)
        out = torch.full(shape, float("nan"), device=lm.device, dtype=lm.dtype)
        out[..., self.landmark_ids.to(lm.device), :] = lm
        return out.numpy() if as_numpy else out

    def landmark(self, mediapipe_id: int, vertices: Any = None) -> Any:
        """Position of one embedded landmark by MediaPipe id."""
        hits = torch.nonzero(self.landmark_ids == mediapipe_id).flatten()
        if hits.numel() == 0:
            raise HeadgenError(
                f"head model '{self.name}' has no embedding for MediaPipe landmark {mediapipe_id}"
            )
        return self.landmarks(vertices)[..., int(hits[0]), :]

    # -- parts ------------------------------------------------------------------------------------
    def part_vertices(self, part: HeadPart) -> tuple[Tensor, Tensor]:
        """(index of the part's vertices into the model's [Vp], its faces over them [F,3]), cached."""
        key = ("part", part.name)
        if key not in self._torch:
            index, inverse = torch.unique(part.faces.cpu(), return_inverse=True)
            self._torch[key] = (index, inverse.reshape(-1, 3))
        return self._torch[key]

    def part_surfaces(self, vertices: Tensor, drawn_only: bool = True, morphs: bool = False) -> list[Any]:
        """The attached parts as constant-colour :class:`SurfaceGeometry` s on ``vertices [V,3]``
        (each compacted to its own vertices). ``drawn_only``: the opaque parts the rasterizer draws;
        ``morphs``: each part carries its slice of the expression blendshapes (exporters)."""
        from headgen.geometry.mesh import Mesh, SurfaceGeometry

        out = []
        for part in self.parts:
            if drawn_only and not part.drawn:
                continue
            index, faces = self.part_vertices(part)
            dev = vertices.device
            colors = None if part.vertex_colors is None else part.vertex_colors.to(dev, vertices.dtype)
            out.append(SurfaceGeometry(
                Mesh(vertices[index.to(dev)], faces.to(dev)),
                base_color=torch.tensor(part.color, device=dev, dtype=vertices.dtype),
                v_color=colors,
                name=part.name, roughness=part.roughness, alpha=part.alpha,
                morph_deltas=self.expression_basis[:, index].to(dev) if morphs and self.num_expression else None,
            ))
        return out

    # -- conversions ------------------------------------------------------------------------------
    def as_trimesh(self, vertices: Any = None) -> Any:
        """A ``trimesh.Trimesh`` of ``vertices`` (template if None), faces as stored, not merged."""
        import trimesh

        v = self.v_template if vertices is None else vertices
        v = v.detach().cpu().numpy() if _is_tensor(v) else np.asarray(v)
        if v.ndim != 2:
            raise HeadgenError(f"as_trimesh takes one mesh [V,3], got shape {v.shape}")
        return trimesh.Trimesh(vertices=v, faces=self.faces.numpy(), process=False)

    def to(self, device: Any) -> HeadModel:
        """A copy with every tensor on ``device``."""
        mv = {k: getattr(self, k).to(device) for k in _TENSOR_FIELDS if getattr(self, k) is not None}
        return replace(self, **mv, regions={k: m.to(device) for k, m in self.regions.items()},
                       parts=[replace(p, faces=p.faces.to(device), vertex_colors=None if p.vertex_colors is None
                                      else p.vertex_colors.to(device)) for p in self.parts],
                       carved=None if self.carved is None else self.carved.to(device), _torch={})

    def truncated(self, num_identity: int | None = None, num_expression: int | None = None) -> HeadModel:
        """A copy keeping the first ``num_identity`` modes / ``num_expression`` blendshapes."""
        k = self.num_identity if num_identity is None else num_identity
        e = self.num_expression if num_expression is None else num_expression
        if not 0 <= k <= self.num_identity:
            raise HeadgenError(f"num_identity must be in [0, {self.num_identity}], got {k}")
        if not 0 <= e <= self.num_expression:
            raise HeadgenError(f"num_expression must be in [0, {self.num_expression}], got {e}")
        return replace(self, identity_basis=self.identity_basis[:k],
                       expression_basis=self.expression_basis[:e],
                       expression_names=self.expression_names[:e], _torch={})

    def transformed(self, scale: float, offset: Any) -> HeadModel:
        """A copy with positions mapped to ``(v + offset) * scale`` (bases scaled accordingly)."""
        offset = torch.as_tensor(np.asarray(offset, dtype=np.float32))
        return replace(
            self,
            v_template=(self.v_template + offset) * scale,
            identity_basis=self.identity_basis * scale,
            expression_basis=self.expression_basis * scale,
            scale=self.scale * scale,
            units="head height" if abs(self.scale * scale - 1.0) < 1e-6 else self.units,
            meta={**self.meta, "normalization": {"scale": float(scale), "offset": offset.tolist()}},
            _torch={},
        )

    def normalized(self, chin: Any = None) -> HeadModel:
        """The model in the built-in head's frame: head height 1, origin halfway from chin to crown
        on the midline, centred in depth between the front and the back of the head.

        ``chin``: the chin point [3] (default: MediaPipe landmark 152 if embedded, else the lowest
        point of the face front).
        """
        v = self.v_template.numpy()
        if chin is None:
            chin = self.landmark(152) if 152 in set(self.landmark_ids.tolist()) else None
        if chin is None:
            raise HeadgenError(f"head model '{self.name}': normalizing needs the chin point (landmark 152)")
        chin = np.asarray(chin, dtype=np.float64)
        crown_y = float(v[:, 1].max())
        height = crown_y - float(chin[1])
        if height <= 0:
            raise HeadgenError(f"head model '{self.name}': the chin is above the crown; cannot normalize")
        head = v[v[:, 1] > chin[1]]
        offset = -np.array([0.5 * (head[:, 0].min() + head[:, 0].max()), 0.5 * (crown_y + chin[1]),
                            0.5 * (head[:, 2].min() + head[:, 2].max())], dtype=np.float32)
        out = self.transformed(1.0 / height, offset)
        return replace(out, scale=1.0, units="head height")

    # -- storage ----------------------------------------------------------------------------------
    def save_npz(self, path: str | Path, half: bool = False) -> Path:
        """Write the model to a compressed ``.npz`` (bases as float16 if ``half``)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        basis_dtype = np.float16 if half else np.float32
        arrays = {
            "name": np.array(self.name),
            "v_template": self.v_template.numpy(),
            "faces": self.faces.numpy().astype(np.int32),
            "identity_basis": self.identity_basis.numpy().astype(basis_dtype),
            "expression_basis": self.expression_basis.numpy().astype(basis_dtype),
            "expression_names": np.array(self.expression_names, dtype=str),
            "landmark_faces": self.landmark_faces.numpy().astype(np.int32),
            "landmark_bary": self.landmark_bary.numpy(),
            "landmark_ids": self.landmark_ids.numpy().astype(np.int32),
            "scale": np.array(self.scale),
            "units": np.array(self.units),
            "region_names": np.array(sorted(self.regions), dtype=str),
        }
        if self.uvs is not None:
            arrays["uvs"] = self.uvs.numpy()
            arrays["uv_faces"] = self.uv_faces.numpy().astype(np.int32)
        for k, m in self.regions.items():
            arrays[f"region_{k}"] = m.numpy()
        if self.carved is not None:
            arrays["carved"] = self.carved.numpy()
        arrays["part_names"] = np.array([p.name for p in self.parts], dtype=str)
        for i, p in enumerate(self.parts):
            arrays[f"part{i}_faces"] = p.faces.numpy().astype(np.int32)
            arrays[f"part{i}_material"] = np.array([*p.color, p.roughness, p.alpha], dtype=np.float32)
            if p.vertex_colors is not None:
                arrays[f"part{i}_colors"] = p.vertex_colors.numpy()
        for k, val in self.meta.items():
            if isinstance(val, (str, int, float)):
                arrays[f"meta_{k}"] = np.array(val)
        tmp = path.with_suffix(".tmp.npz")
        np.savez_compressed(tmp, **arrays)
        tmp.replace(path)
        return path

    @classmethod
    def load_npz(cls, path: str | Path) -> HeadModel:
        path = Path(path)
        if not path.is_file():
            raise HeadgenError(f"head model file not found: {path}")
        try:
            z = np.load(path, allow_pickle=False)
            regions = {str(k): z[f"region_{k}"] for k in z["region_names"]}
            meta = {k[5:]: z[k].item() for k in z.files if k.startswith("meta_")}
            parts = []
            for i, pname in enumerate(z["part_names"] if "part_names" in z.files else []):
                mat = z[f"part{i}_material"]
                colors = z[f"part{i}_colors"] if f"part{i}_colors" in z.files else None
                parts.append(HeadPart(str(pname), z[f"part{i}_faces"], tuple(mat[:3]), float(mat[3]), colors,
                                      float(mat[4])))
            return cls(
                name=str(z["name"]),
                v_template=z["v_template"],
                faces=z["faces"],
                identity_basis=z["identity_basis"].astype(np.float32),
                expression_basis=z["expression_basis"].astype(np.float32),
                expression_names=[str(n) for n in z["expression_names"]],
                landmark_faces=z["landmark_faces"],
                landmark_bary=z["landmark_bary"],
                landmark_ids=z["landmark_ids"],
                uvs=z["uvs"] if "uvs" in z.files else None,
                uv_faces=z["uv_faces"] if "uv_faces" in z.files else None,
                regions=regions,
                parts=parts,
                carved=z["carved"] if "carved" in z.files else None,
                scale=float(z["scale"]),
                units=str(z["units"]),
                meta=meta,
            )
        except (KeyError, ValueError, OSError) as exc:
            raise HeadgenError(
                f"{path} is not a head model file ({exc}); regenerate or re-export it"
            ) from exc


class LazyHead:
    """Base of the registered ``head`` parts: keeps the config and builds the model on first use.

    A subclass defines its ``Config`` and :meth:`build`; :meth:`load` calls ``build`` once and
    answers the same :class:`HeadModel` afterwards (loading a real model reads large files).
    """

    def __init__(self, cfg: Any, *args: Any, **kwargs: Any):
        self.cfg = cfg
        self._model: HeadModel | None = None

    def build(self) -> HeadModel:
        """Read or generate the model from ``self.cfg`` (called once, by :meth:`load`)."""
        raise NotImplementedError(f"{type(self).__name__}.build (loading this head model)")

    def load(self) -> HeadModel:
        """The head model, built on the first call and cached on this object."""
        if self._model is None:
            self._model = self.build()
        return self._model


_TENSOR_FIELDS = ("v_template", "faces", "identity_basis", "expression_basis", "landmark_faces",
                  "landmark_bary", "landmark_ids", "uvs", "uv_faces")


def _is_tensor(x: Any) -> bool:
    return isinstance(x, torch.Tensor)


def _tensor(x: Any, dtype: torch.dtype) -> Tensor:
    """A CPU tensor copy-free where possible (numpy arrays, lists or tensors)."""
    if isinstance(x, torch.Tensor):
        return x.detach().to(dtype)
    return torch.as_tensor(np.ascontiguousarray(np.asarray(x)), dtype=dtype)
