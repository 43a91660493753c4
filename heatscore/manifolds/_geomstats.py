"""PLACEHOLDER"""


def from_geomstats(space):
    raise NotImplementedError
