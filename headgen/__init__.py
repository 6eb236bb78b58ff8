"""headgen: text prompt -> production-ready 3D head, with DreamFace, HeadSculpt and HeadArtist as recipes."""

__version__ = "0.1.0"
