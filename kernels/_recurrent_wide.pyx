# The kernels again, built with tiles of two SIMD vectors (setup.py: NN_TILE_VECTORS=2, only for
# 64-byte vectors): one source, included whole. kernels/__init__.py chooses per call.
include "_recurrent.pyx"
