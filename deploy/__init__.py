"""Packaging, provisioning and deployment of the pipeline, and the embedded local stack.

``deploy`` depends on ``helpers``; ``helpers`` never imports ``deploy``.
"""
