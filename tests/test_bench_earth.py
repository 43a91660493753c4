"""The Earth benchmark's published protocol in a quick mode (volcano, one seed, two candidates)."""

import math

from heatscore.bench.earth import run_published, run_published_one


def test_published_protocol_quick():
    candidates = (("multiscale", 1e-6), ("auto", 1e-5))
    r = run_published_one("volcano", 0, candidates)
    assert r["choice"] in candidates
    for key in ("nll", "nll_far", "nll_90", "fit_s"):
        assert math.isfinite(r[key]), key
    assert 0.0 < r["far_share"] <= 1.0


def test_published_table_prints_one_row_per_data_set():
    lines = []
    run_published(["volcano"], seeds=[1], candidates=(("multiscale", 1e-5),), out=lines.append)
    assert len(lines) == 3 and lines[2].startswith("| volcano |") and "-4.92" in lines[2]
