"""Hair for DreamFace's hair stage: preset colours, hairstyle libraries, the built-in procedural styles."""

from headgen.hair.colours import PRESET_COLOURS, colour_rgb
from headgen.hair.library import NONE, HairFit, HairLibrary, HairStyle, builtin_library, load_library, resolve_library

__all__ = ["NONE", "PRESET_COLOURS", "HairFit", "HairLibrary", "HairStyle", "builtin_library", "colour_rgb",
           "load_library", "resolve_library"]
