"""Search stage: the config-to-Ray-Tune adapter, search spaces, schedulers, resume and the CLI.

This is the only package that imports Ray.
"""
