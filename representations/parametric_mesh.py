"""The parametric head mesh (DreamFace): identity coefficients, displacement, detail normal map,
UV textures, expressions.

Geometry: ``T* = T_mean + sum_i beta*_i S_i`` is the coarse head (beta* from selection);
``T+ = T(beta) + d * n(T*)`` adds a per-vertex displacement ``d`` along the coarse vertex normals.
Appearance: an RGB albedo map and/or a latent texture (4 x 64 x 64, rendered directly for
latent-space SDS) and a tangent-space detail normal map, all in the head model's UV layout.
Attached parts (ICT-FaceKit's eyeballs, teeth, gums, lashes: :class:`~headgen.heads.base.HeadPart`)
follow identity and expressions, are never carved (the displacement is zero outside the head
model's ``carved`` vertices), render with their fixed materials (latent renders: their colour
encoded by the guidance's VAE) and export as separate meshes with their share of the morph
targets. Hair (DreamFace's hair stage): a selected hairstyle mesh fitted to the head, a constant colour and
the style's name, held in buffers so they pass from stage to stage and survive results and
checkpoints. Hair is selected, not optimised: :meth:`render_input` draws the head alone (what
optimisation stages and their metrics see); :meth:`export_surface` adds the hair as a part.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from headgen.errors import ConfigError
from headgen.geometry.laplacian import uniform_laplacian
from headgen.geometry.mesh import Mesh, SurfaceGeometry
from headgen.registry import register
from representations.base import Representation

if TYPE_CHECKING:
    from headgen.context import RunContext


@dataclass
class ParametricMeshConfig:
    num_identity: int = 50
    """Identity coefficients optimised: the first N modes of the head model (all of them when it has fewer,
    e.g. the 8 of the ICT-FaceKit sample)."""
    displacement: bool = True
    """Learn a per-vertex displacement along the coarse vertex normals."""
    normal_map_size: int = 512
    """Size of the tangent-space detail normal map (0: none)."""
    texture: Literal["none", "rgb", "latent", "both"] = "rgb"
    """Which UV textures exist: an RGB albedo map, a latent texture, or both."""
    texture_size: int = 512
    """Size of the RGB albedo map."""
    latent_size: int = 64
    """Size of the latent texture (SD latents: 64 for a 512 image)."""
    latent_channels: int = 4
    """Channels of the latent texture."""
    init_albedo: tuple[float, float, float] = (0.72, 0.56, 0.47)
    """Initial uniform albedo of the RGB map."""
    expression: dict[str, float] = field(default_factory=dict)
    """Static expression blendshape weights by name (e.g. {jawOpen: 0.3})."""
    specular: bool = False
    """Hold a specular map [T,T,1] (set by DreamFace's PBR stage; exported as a PBR texture)."""
    texture_mask: str | None = None
    """A grey-scale image in the UV atlas (white: may change, black: kept): the gradients of the
    latent texture and the albedo map are multiplied by it (resized to each), so that a texture
    edit stays inside it. Null: everywhere."""
    personalised_expressions: bool = True
    """Export the expressions transferred onto the carved head (the carved detail follows the skin as it
    moves: see ``expression_deltas``); false: the head model's generic deltas as they are."""
    albedo_from_latent: bool = False
    """The albedo is the latent texture decoded by the guidance's VAE (DreamFace's image-space texture
    stage); at the end of the stage the decoded map is baked into the RGB albedo (texture: both)."""

    def __post_init__(self) -> None:
        if self.albedo_from_latent and self.texture != "both":
            raise ValueError("albedo_from_latent needs texture: both (the latent is decoded into the RGB map)")


@register("representation", "parametric-mesh")
class ParametricMesh(Representation):
    """Head-model mesh with identity coefficients, displacement, detail normal map and UV textures."""

    Config = ParametricMeshConfig

    def __init__(self, cfg: ParametricMeshConfig, ctx: RunContext):
        super().__init__(cfg, ctx)
        head = ctx.head
        self.head = head
        k = head.identity_basis.shape[0]
        if cfg.num_identity < 1:
            raise ConfigError(f"representation.num_identity must be >= 1, got {cfg.num_identity}")
        unknown = [n for n in cfg.expression if n not in head.expression_names]
        if unknown:
            raise ConfigError(
                f"representation.expression: unknown expression '{unknown[0]}'; the head model has: "
                f"{', '.join(head.expression_names)}"
            )
        if head.uvs is None or head.uv_faces is None:
            raise ConfigError(
                f"head model {head.name} has no UVs, which the parametric mesh's textures and normal map need "
                "(FLAME: give head.uv_template)"
            )
        n = min(cfg.num_identity, k)
        self.register_buffer("v_template", head.v_template.float().clone(), persistent=False)
        self.register_buffer("identity_basis", head.identity_basis[:n].float().clone(), persistent=False)
        self.register_buffer("faces", head.faces.long().clone(), persistent=False)
        self.register_buffer("uvs", head.uvs.float().clone(), persistent=False)
        self.register_buffer("uv_faces", head.uv_faces.long().clone(), persistent=False)
        carved = head.carved if head.carved is not None else torch.ones(head.v_template.shape[0], dtype=torch.bool)
        self.register_buffer("carve_mask", carved.float().clone(), persistent=False)
        # Vertices the skin's faces use (exports drop the parts' vertices from the skin mesh).
        used = torch.unique(head.faces)
        self._skin_index = None if used.numel() == head.v_template.shape[0] else used
        self._part_latents: dict[str, Tensor] = {}
        self.beta = nn.Parameter(torch.zeros(n))
        self.register_buffer("beta_star", torch.zeros(n))
        v = head.v_template.shape[0]
        self.displacement = nn.Parameter(torch.zeros(v)) if cfg.displacement else None
        s = cfg.normal_map_size
        # Stored as an unnormalised tangent-space vector; (0,0,1) is flat.
        self.normal_map = nn.Parameter(torch.tensor([0.0, 0.0, 1.0]).repeat(s, s, 1)) if s > 0 else None
        if cfg.texture in ("rgb", "both"):
            self.albedo = nn.Parameter(torch.tensor(cfg.init_albedo).repeat(cfg.texture_size, cfg.texture_size, 1))
        else:
            self.albedo = None
        if cfg.texture in ("latent", "both"):
            self.latent = nn.Parameter(torch.zeros(cfg.latent_channels, cfg.latent_size, cfg.latent_size))
        else:
            self.latent = None
        weights = torch.zeros(len(head.expression_names))
        for name, w in cfg.expression.items():
            weights[head.expression_names.index(name)] = w
        self.register_buffer("expression_weights", weights, persistent=False)
        self._expr_basis = head.expression_basis.float()
        self._decode: Any = None
        if cfg.specular:
            self.register_buffer("specular_map", torch.zeros(cfg.texture_size, cfg.texture_size, 1))
        else:
            self.specular_map = None
        if cfg.texture_mask is not None:
            self._mask_gradients(cfg.texture_mask)
        # Hair: empty until a hair selector sets it (sizes follow the style; see _load_from_state_dict).
        self.register_buffer("hair_vertices", torch.zeros(0, 3))
        self.register_buffer("hair_faces", torch.zeros(0, 3, dtype=torch.long))
        self.register_buffer("hair_color", torch.zeros(3))
        self.register_buffer("hair_info", torch.zeros(0, dtype=torch.uint8))

    def _mask_gradients(self, path: str) -> None:
        import imageio.v3 as iio

        try:
            image = torch.as_tensor(iio.imread(path)).float()
        except (OSError, ValueError) as exc:
            raise ConfigError(f"representation.texture_mask: cannot read {path} as an image ({exc})") from exc
        image = image[..., :3].mean(-1) if image.dim() == 3 else image
        mask = (image / (255.0 if image.max() > 1 else 1.0)).clamp(0, 1)[None, None]

        def resized(size: int) -> Tensor:
            return F.interpolate(mask, size=(size, size), mode="area")[0, 0]

        if self.latent is not None:  # [C,S,S]
            self.register_buffer("latent_mask", resized(self.latent.shape[-1]), persistent=False)
            self.latent.register_hook(lambda g: g * self.latent_mask)
        if self.albedo is not None:  # [T,T,3]
            self.register_buffer("albedo_mask", resized(self.albedo.shape[0])[..., None], persistent=False)
            self.albedo.register_hook(lambda g: g * self.albedo_mask)

    # ------------------------------------------------------------------ parameters
    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        groups = {"beta": [self.beta]}
        names = ["displacement", "normal_map", "latent"] + ([] if self.cfg.albedo_from_latent else ["albedo"])
        for name in names:
            p = getattr(self, name)
            if p is not None:
                groups[name] = [p]
        return groups

    # ------------------------------------------------------------------ hair
    HAIR_BUFFERS = ("hair_vertices", "hair_faces", "hair_color", "hair_info")

    def set_hair(self, vertices: Tensor | None, faces: Tensor | None = None, color: Tensor | None = None,
                 **info: Any) -> None:
        """Attach a hairstyle (vertices [V,3] in the head's frame, faces [F,3], colour [3] in [0,1]) and
        what to remember about it (e.g. style="long", colour="blonde"); ``vertices=None`` removes the
        hair (info is kept, e.g. style="none")."""
        dev = self.v_template.device
        if vertices is None:
            self.hair_vertices = torch.zeros(0, 3, device=dev)
            self.hair_faces = torch.zeros(0, 3, dtype=torch.long, device=dev)
            self.hair_color = torch.zeros(3, device=dev)
        else:
            if faces is None or color is None:
                raise ConfigError("set_hair: vertices need faces and a colour")
            if vertices.dim() != 2 or vertices.shape[-1] != 3 or faces.dim() != 2 or faces.shape[-1] != 3:
                raise ConfigError(f"set_hair: vertices [V,3] and faces [F,3] expected, got "
                                  f"{tuple(vertices.shape)} and {tuple(faces.shape)}")
            self.hair_vertices = vertices.detach().float().to(dev).clone()
            self.hair_faces = faces.detach().long().to(dev).clone()
            self.hair_color = color.detach().float().to(dev).reshape(3).clone()
        data = json.dumps(info, sort_keys=True).encode() if info else b""
        self.hair_info = torch.tensor(list(data), dtype=torch.uint8, device=dev)

    @property
    def has_hair(self) -> bool:
        return self.hair_faces.shape[0] > 0

    def hair(self) -> dict[str, Any]:
        """What the hair selector recorded (e.g. {"style": "long", "colour": "blonde"}); {} when none ran."""
        if self.hair_info.numel() == 0:
            return {}
        return json.loads(bytes(self.hair_info.cpu().tolist()).decode())

    def hair_surface(self) -> SurfaceGeometry | None:
        """The hair as a constant-colour surface part named "hair" (None without hair)."""
        if not self.has_hair:
            return None
        return SurfaceGeometry(Mesh(self.hair_vertices, self.hair_faces), base_color=self.hair_color, name="hair")

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        # Hair buffers take the size of what is loaded; results saved before hair existed load without it.
        empty = {"hair_vertices": (0, 3), "hair_faces": (0, 3), "hair_color": (3,), "hair_info": (0,)}
        for name, shape in empty.items():
            key = prefix + name
            own = getattr(self, name)
            if key in state_dict:
                setattr(self, name, own.new_empty(state_dict[key].shape))
            else:
                state_dict[key] = own.new_zeros(shape)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def set_identity(self, beta: Tensor) -> None:
        """Set the selected coarse identity (beta* and the starting beta)."""
        with torch.no_grad():
            self.beta.copy_(beta[: self.beta.numel()].to(self.beta))
            self.beta_star.copy_(self.beta)

    # ------------------------------------------------------------------ geometry
    def coarse_vertices(self) -> Tensor:
        """T* = T_mean + sum beta*_i S_i (the selected identity, no displacement)."""
        return self.v_template + torch.einsum("k,kvc->vc", self.beta_star, self.identity_basis)

    def vertices(self, expression: Tensor | None = None) -> Tensor:
        """T+ = T(beta) + d n(T*) (+ expression blendshapes)."""
        verts = self.v_template + torch.einsum("k,kvc->vc", self.beta, self.identity_basis)
        if self.displacement is not None:
            normals = self._coarse_mesh().vertex_normals().detach()
            verts = verts + (self.displacement * self.carve_mask)[:, None] * normals
        weights = self.expression_weights if expression is None else expression
        if weights.abs().sum() > 0:
            basis = self._expr_basis.to(verts.device)
            verts = verts + torch.einsum("e,evc->vc", weights.to(verts), basis)
        return verts

    def _coarse_mesh(self) -> Mesh:
        return Mesh(self.coarse_vertices(), self.faces, self.uvs, self.uv_faces)

    def mesh(self, expression: Tensor | None = None) -> Mesh:
        return Mesh(self.vertices(expression), self.faces, self.uvs, self.uv_faces)

    def expression_deltas(self) -> tuple[list[str], Tensor]:
        """Expression blendshape names and deltas [E,V,3] of the exported skin (morph targets).

        Personalised (``personalised_expressions``, with a carved displacement): each generic shape
        moves the coarse identity surface, and the carved detail is re-applied along the normals of
        the moved surface rather than the neutral one, so wrinkles and pores turn with the skin as
        the jaw opens instead of staying behind in their neutral direction. This is deformation
        transfer for a surface stored as base mesh + normal displacement (ICT-FaceKit combines
        identity and expression linearly, so the base is exact; the detail follows the local
        frame, the role the per-triangle solve of Sumner and Popovic plays for arbitrary meshes,
        which was not implemented or compared). Vertices the generic shape leaves still stay still
        (the same support), so a rig built on the generic shapes keeps working."""
        basis = self._expr_basis
        if self.cfg.personalised_expressions and self.displacement is not None and basis.shape[0]:
            basis = self._transferred_basis()
        if self._skin_index is not None:
            basis = basis[:, self._skin_index.to(basis.device)]
        return list(self.head.expression_names), basis

    @torch.no_grad()
    def _transferred_basis(self) -> Tensor:
        generic = self._expr_basis.to(self.v_template.device)
        coarse = self.coarse_vertices().detach()
        detail = (self.displacement * self.carve_mask).detach()[:, None]
        neutral = Mesh(coarse, self.faces).vertex_normals()
        out = torch.empty_like(generic)
        for e in range(generic.shape[0]):
            moved = Mesh(coarse + generic[e], self.faces).vertex_normals()
            still = generic[e].abs().amax(-1) == 0
            out[e] = (generic[e] + detail * (moved - neutral)).masked_fill(still[:, None], 0.0)
        return out

    def _parts(self, verts: Tensor, drawn_only: bool = True, morphs: bool = False) -> list[SurfaceGeometry]:
        parts = self.head.part_surfaces(verts, drawn_only=drawn_only, morphs=morphs)
        for p in parts:
            p.base_latent = self._part_latents.get(p.name)
        return parts

    def head_identity(self) -> Tensor:
        return self.beta_star

    def landmarks_mediapipe(self) -> Tensor:
        """[478,3] MediaPipe landmarks on the current surface (NaN where the head has none)."""
        return self.head.landmarks_mediapipe(self.vertices())

    def normal_map_image(self) -> Tensor | None:
        """The detail normal map in [0,1] encoding ((0.5, 0.5, 1) is flat)."""
        if self.normal_map is None:
            return None
        return F.normalize(self.normal_map, dim=-1) * 0.5 + 0.5

    def albedo_image(self) -> Tensor | None:
        """[T,T,3] albedo in [0,1]: the RGB map, or the decoded latent texture (albedo_from_latent)."""
        if self.cfg.albedo_from_latent and self._decode is not None:
            decoded = self._decode(self.latent[None])[0]
            if decoded.shape[0] != self.cfg.texture_size:
                decoded = F.interpolate(decoded.permute(2, 0, 1)[None], size=self.cfg.texture_size, mode="bilinear",
                                        align_corners=False)[0].permute(1, 2, 0)
            return decoded.clamp(0.0, 1.0)
        return None if self.albedo is None else self.albedo.clamp(0.0, 1.0)

    def render_input(self) -> SurfaceGeometry:
        mesh = self.mesh()
        return SurfaceGeometry(
            mesh=mesh,
            albedo_map=self.albedo_image(),
            normal_map=self.normal_map_image(),
            latent_map=self.latent,
            parts=self._parts(mesh.v_pos),
        )

    def attach(self, backbone: Any) -> None:
        if self.cfg.albedo_from_latent:
            self._decode = backbone.decode
        if self.latent is not None and self.head.parts:
            self._part_latents = part_latents(self.head, backbone, self.latent.shape[0])

    def finalize(self) -> None:
        if self.cfg.albedo_from_latent and self._decode is not None:
            with torch.no_grad():
                self.albedo.copy_(self.albedo_image())

    def guidance_extras(self) -> dict[str, Any]:
        return {} if self.latent is None else {"texture_latent": self.latent[None]}

    def export_surface(self) -> SurfaceGeometry:
        """The mesh with UVs and texture images, detached (for exporters), with the hair as a part."""
        with torch.no_grad():
            hair = self.hair_surface()
            mesh = self.mesh()
            parts = self._parts(mesh.v_pos, drawn_only=False, morphs=True)
            if self._skin_index is not None:  # the skin alone, without the parts' vertices
                index = self._skin_index.to(mesh.v_pos.device)
                remap = torch.full((mesh.num_vertices,), -1, dtype=torch.long, device=index.device)
                remap[index] = torch.arange(index.numel(), device=index.device)
                mesh = Mesh(mesh.v_pos[index], remap[mesh.t_pos_idx.long()], mesh.v_tex, mesh.uv_idx)
            return SurfaceGeometry(
                mesh=mesh,
                albedo_map=None if self.albedo is None else self.albedo.detach().clamp(0.0, 1.0),
                normal_map=self.normal_map_image(),
                specular_map=self.specular_map,
                name="head",
                parts=parts + ([] if hair is None else [hair]),
            )

    def to(self, *args: Any, **kwargs: Any) -> ParametricMesh:
        out = super().to(*args, **kwargs)
        self._expr_basis = self._expr_basis.to(self.v_template.device)
        return out

    # ------------------------------------------------------------------ regularisers
    def reg_shape(self, step: int) -> Tensor:
        """L_sha = ||beta - beta*||^2."""
        return (self.beta - self.beta_star).pow(2).sum()

    def reg_laplacian(self, step: int) -> Tensor:
        """Laplacian smoothness of T+ relative to T* (mean squared difference of uniform Laplacians)."""
        lap = self._laplacian()
        coarse = self.coarse_vertices()
        diff = torch.sparse.mm(lap, self.vertices()) - torch.sparse.mm(lap, coarse)
        return diff.pow(2).sum(-1).mean()

    def reg_normal_map(self, step: int) -> Tensor:
        """L_map = ||Laplacian N_d||^2 + ||grad N_d||^2 (means over texels)."""
        if self.normal_map is None:
            raise ConfigError("lambda_normal_map is set but the representation has no normal map (normal_map_size: 0)")
        n = F.normalize(self.normal_map, dim=-1).permute(2, 0, 1)[None]
        gx = n[..., :, 1:] - n[..., :, :-1]
        gy = n[..., 1:, :] - n[..., :-1, :]
        kernel = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]], device=n.device)
        lap = F.conv2d(F.pad(n, (1, 1, 1, 1), mode="replicate"), kernel.expand(3, 1, 3, 3), groups=3)
        return lap.pow(2).mean() + gx.pow(2).mean() + gy.pow(2).mean()

    def _laplacian(self) -> Tensor:
        if getattr(self, "_lap", None) is None or self._lap.device != self.faces.device:
            self._lap = uniform_laplacian(self.v_template.shape[0], self.faces)
        return self._lap

    # ------------------------------------------------------------------ stage hand-over
    def load_from(self, previous: Representation) -> None:
        """Start from the previous parametric mesh: copy every parameter both have. Identity
        coefficients carry over into a head with more modes (the extra ones start at zero, so the
        shape is the same); any other size difference is an error, never a silent fresh start."""
        if not isinstance(previous, ParametricMesh):
            super().load_from(previous)
            return
        mine = self.state_dict()
        theirs = previous.state_dict()
        with torch.no_grad():
            for key, value in theirs.items():
                if key in self.HAIR_BUFFERS:
                    mine[key] = value.detach().clone()  # whatever its size: the hair passes on as it is
                elif key not in mine:
                    continue
                elif mine[key].shape == value.shape:
                    mine[key].copy_(value)
                elif key in ("beta", "beta_star") and value.numel() < mine[key].numel():
                    mine[key].zero_()[: value.numel()].copy_(value)
                else:
                    what = "num_identity" if key in ("beta", "beta_star") else key
                    raise ConfigError(
                        f"parametric-mesh: this stage's {key} has shape {tuple(mine[key].shape)}, the previous "
                        f"stage's {tuple(value.shape)}; give representation.{what} (and sizes) the same values in "
                        "both stages (a head with fewer identity modes than the previous one cannot hold its shape)"
                    )
        self.load_state_dict(mine)


@torch.no_grad()
def part_latents(head: Any, backbone: Any, channels: int) -> dict[str, Tensor]:
    """Each attached part's constant latent: a 64 px image of its colour encoded by the backbone's
    VAE and averaged (latent renders draw the parts with it)."""
    encode = getattr(backbone, "encode", None)
    if encode is None:
        return {}
    out = {}
    for part in head.parts:
        image = torch.tensor(part.color).view(1, 1, 1, 3).expand(1, 64, 64, 3)
        z = encode(image.to(getattr(backbone, "device", "cpu")))
        if z.shape[1] != channels:
            raise ConfigError(f"the guidance's VAE encodes {z.shape[1]} channels, the latent texture has {channels}")
        out[part.name] = z.mean(dim=(0, 2, 3)).float()
    return out
