"""Training commands that make the files recipes load (``python -m headgen.train COMMAND ...``).

* ``textual-inversion``: learn a token embedding from a folder of images (HeadSculpt's
  ``<back-view>``), for ``prompt.token_file``.
* ``texture-data``: check a folder of UV textures (DreamFace's texture data), or make a demo one.
* ``texture-ldm``: DreamFace's texture LDM (5-channel UNet + learned C_d / C_u), for
  ``models.dreamface_texture.local_dir``.
* ``pbr-decoders``: DreamFace's D_s / D_n (specular and normal decoders of the diffuse latent), for
  the pbr stage's ``specular_decoder`` / ``normal_decoder``.
"""

COMMANDS: dict[str, str] = {
    "textual-inversion": "headgen.train.textual_inversion",
    "texture-data": "headgen.train.texture_data",
    "texture-ldm": "headgen.train.texture_ldm",
    "pbr-decoders": "headgen.train.pbr_decoders",
}
"""{command: module with ``main(argv, prog)``}; a module is imported only when its command runs."""
