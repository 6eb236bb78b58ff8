"""The ``export`` stage: write the final asset files into ``assets/``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from headgen.config.typed import Component, component
from headgen.context import RunContext
from headgen.errors import ConfigError
from headgen.protocols import Exporter
from headgen.registry import register
from headgen.stages.base import Stage


@dataclass(kw_only=True)
class ExportConfig:
    exporters: list[Component] = component("exporter", default=[])
    """Exporters to run in order ({type: NAME, ...}); each writes files under assets/."""


@register("stage", "export")
class ExportStage(Stage):
    """Write the final representation as files (mesh, textures, previews, video)."""

    Config = ExportConfig

    def run(self, ctx: RunContext, resume_checkpoint: Path | None = None) -> None:
        rep = ctx.state.get("representation")
        if rep is None:
            raise ConfigError(f"stages.{self.name}: nothing to export: no earlier stage produced a representation")
        if not self.cfg.exporters:
            raise ConfigError(f"stages.{self.name}.exporters: list at least one exporter")
        torch.manual_seed(ctx.stage_seed(self.name))
        ctx.run_dir.assets.mkdir(exist_ok=True)
        for comp in self.cfg.exporters:
            exporter: Exporter = comp.build()
            with torch.no_grad():
                written = exporter.export(rep, ctx, ctx.run_dir.assets)
            assets = ctx.run_dir.assets.resolve()
            for key, path in written.items():
                if not Path(path).resolve().is_relative_to(assets):  # a plugin exporter that ignored assets/
                    raise ConfigError(f"stages.{self.name}: exporter {comp.type} wrote {path}, outside the run's "
                                      f"assets/ folder {assets}; an exporter must write under the folder it is given")
                ctx.assets[key] = str(Path(path).relative_to(ctx.run_dir.root))
