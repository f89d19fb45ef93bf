"""The serving surface: HTTP API (`api`, `schemas`), `AppConfig` (`config`), the graph builder
(`app`), the job and object stores (`jobs`, `objects`) and the `songserve` CLI (`cli`).

Kept free of imports: the CLI imports this package and must start without loading Ray.
"""
