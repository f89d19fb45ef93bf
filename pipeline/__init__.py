"""Pure audio and text functions: arrays and a sample rate in, arrays and numbers out.

No Ray, no FastAPI, no network, no global state. Modules: `audio` (the array convention), `sketch`
(the procedural arranger), `lyrics`, `tags` and `vocabulary`, `loudness`, `encode`, `peaks`.
"""
