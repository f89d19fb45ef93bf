"""Tiny random-weight checkpoints in each model's real on-disk format, for tests and CI: no
weights can be downloaded, so the real loading code is exercised on these (never a faked
output). Each module builds one (`build_tiny_…(path)`, idempotent) and has a `main` for its
script in scripts/ (`python scripts/make_tiny_acestep.py PATH`)."""
