"""Input encodings for neural fields (multi-resolution hash grid: pure PyTorch or tiny-cuda-nn)."""

from headgen.encoding.hashgrid import MLP, HashField, HashGridConfig, HashGridEncoding, tcnn_available

__all__ = ["MLP", "HashField", "HashGridConfig", "HashGridEncoding", "tcnn_available"]
