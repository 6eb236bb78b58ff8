"""Converter plugins (kind ``converter``, run by ``convert`` stages): one representation into another."""

from converters import dreamface_pbr, nerf_to_dmtet  # noqa: F401  (registers them)
