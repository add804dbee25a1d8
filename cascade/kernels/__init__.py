"""Pure array kernels (numpy / torch), each tested against a naive reference.

``maxsim``: late interaction over a packed token matrix; ``dense``: dot-product scores and
exact top-k. Nothing here knows about stages, caches or configs.
"""
