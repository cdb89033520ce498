"""Components shared by the bundles of this collection, laid out like MONAI's own tree.

Generic parts by kind: ``common.transforms``, ``common.networks`` (``nets``, ``blocks``), ``common.handlers``,
``common.metrics``, ``common.data`` (loaders of the real layouts), ``common.visualize``, ``common.utils``; the seeded
synthetic writers apart in ``common.synthetic``; each method's workflow in ``common.apps.<method>``. See
``docs/architecture.md``. Nothing is imported here: import the sub-package you need.
"""
