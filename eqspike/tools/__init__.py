"""Developer tools: the import graph (``python -m eqspike.tools.import_graph``)."""
