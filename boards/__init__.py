"""Board data files for ``fedtiny build`` (one JSON file per board; adding a board is adding a file).

Loaded by ``fedtiny.codegen.boards``; this package exists so the JSON files ship with a
non-editable install too.
"""
