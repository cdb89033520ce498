"""Components shared by the bundles of this collection (k-space sampling, data sets, networks, ...).

Submodules are imported explicitly (``common.kspace``, ``common.data.acdc``, ...); nothing heavy is loaded here.
"""
