"""Benchmarks that ship with the package (``heatscore bench``, ``heatscore demo``), outside the
library core: :mod:`heatscore.bench.earth` (the Earth-science data on S²) and
:mod:`heatscore.bench.mesh` (densities on the refined Spot mesh). The core never imports them."""
