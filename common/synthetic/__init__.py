"""Seeded synthetic writers of the data sets in their real layouts (tests, demos and benchmarks only).

Each writer is its own command, ``python -m common.synthetic.<dataset> --out DIR``, so nothing is imported here:
import ``common.synthetic.<dataset>``.
"""
