"""The command line (``cli``) and the commands that are not a package of their own: ``list``, ``run`` and
``compare`` (``core``), their data-parallel variants (``parallel``), ``reproduce``, and the progress display."""
