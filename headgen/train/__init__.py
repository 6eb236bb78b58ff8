"""Training commands that make the files recipes load (``python -m headgen.train COMMAND ...``).

* ``textual-inversion``: learn a token embedding from a folder of images (HeadSculpt's
  ``<back-view>``), for ``prompt.token_file``.
"""

COMMANDS: dict[str, str] = {
    "textual-inversion": "headgen.train.textual_inversion",
}
"""{command: module with ``main(argv, prog)``}; a module is imported only when its command runs."""
