"""Generators, one module each (``vfbench.generators.<name>``), registered lazily in vfbench.builtins."""
