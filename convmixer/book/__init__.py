"""The book's helpers: what the chapters use to show, check and analyse the library.

They import the core (:mod:`convmixer.model`, :mod:`convmixer.data`, :mod:`convmixer.train`, ...) and
the core never imports them, so the core runs without matplotlib or ipywidgets.  One module a job::

    svg               SVG and PNG written as text: the one writer behind every drawn figure
    figures           the architecture figure (shapes computed from the configuration)
    interactive       figures a reader moves without a kernel: every state drawn when a chapter runs
    explorers         the chapters' movable figures, built with interactive
    plots             matplotlib figures: image grids, patches, receptive fields, filters, feature maps
    receptive_fields  patches, receptive fields and gradient maps, measured
    experiments       the result grids under book/results/ read back, and statistics at initialisation
    stats             comparisons of runs against the seed-to-seed noise (scipy)
    tables            fixed-width text tables
    listing           the library's own source, shown beside the prose
"""
