"""The commands (`dwcp-inference ...`): the top floor, which may import services/, training/ and export/; nothing
below imports it (pyproject.toml [tool.importlinter])."""
