"""Build script: the pure-Python packages and (from the kernels issue on) the Cython kernels.

Metadata lives here rather than in pyproject.toml so the extension build can be configured in
code; pyproject.toml only declares the build requirements.
"""
import os

from setuptools import Extension, find_packages, setup


def _compiler_defines(flag: str, macro: str) -> bool:
    """Whether the C compiler, given ``flag``, predefines ``macro`` (e.g. __AVX512F__ with -march=native)."""
    import shlex
    import subprocess
    import sysconfig

    cc = shlex.split(os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc")
    try:
        out = subprocess.run(cc + [flag, "-dM", "-E", "-x", "c", "-"], input="", capture_output=True, text=True,
                             check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return False
    return any(line.split()[1:2] == [macro] for line in out.splitlines())


def kernel_extensions():
    """Cython extensions of ``kernels/``.

    Switches, read from the environment at build time:

    * ``NNCORE_KERNEL_DEBUG=1`` turns on boundscheck, wraparound and initializedcheck (CI
      builds once that way and runs the kernel tests); off by default.
    * ``NNCORE_NATIVE``: ``-march=native`` is on by default (AVX2/FMA; measured 2.8x faster
      than the portable SSE2 build on the reference workload, see ``kernels/__init__.py``);
      ``NNCORE_NATIVE=0`` builds a portable ``-O3`` binary for wheels that leave this machine.
    * ``NNCORE_VECTOR_BYTES`` (16, 32 or 64): the SIMD width of the tiles. By default the widest
      the build targets (64 with AVX-512, 32 with AVX, 16 for the portable build); a narrower one
      for CPUs whose wide vectors lower the clock, and to test every width on one machine.

    With 64-byte vectors a second extension, ``kernels._recurrent_wide``, is the same source with
    tiles of two vectors (32 float32 / 16 float64 rows) instead of one: ``kernels`` runs a batch on
    the wide tiles when they cost less for its size (see ``kernels/__init__.py``).
    """
    from Cython.Build import cythonize

    debug = os.environ.get("NNCORE_KERNEL_DEBUG", "0") == "1"
    native = os.environ.get("NNCORE_NATIVE", "1") != "0"
    # GCC or Clang (the tile code uses GCC vector extensions). -fno-wrapv undoes Python's -fwrapv (from
    # sysconfig's CFLAGS): with it, the products' index arithmetic may wrap and GCC addresses the wide
    # tiles' loads worse (measured: wide-tile GRU and LSTM steps 15-20 % slower; the narrow ones the same).
    # Nothing here relies on signed overflow wrapping.
    compile_args, link_args = ["-O3", "-fopenmp", "-fno-wrapv"], ["-fopenmp"]
    if native:
        compile_args.append("-march=native")
    macros = [("NNCORE_NATIVE_BUILD", int(native)), ("NNCORE_DEBUG_BUILD", int(debug)),
              ("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")]
    width = os.environ.get("NNCORE_VECTOR_BYTES", "")
    if width:
        if width not in ("16", "32", "64"):
            raise SystemExit(f"NNCORE_VECTOR_BYTES must be 16, 32 or 64 (bytes per SIMD vector), got {width!r}")
        macros.append(("NNCORE_VECTOR_BYTES", int(width)))
    depends = ["kernels/_tile.h", "kernels/_tile_impl.h", "kernels/_tile.pxd", "kernels/_recurrent.pyx"]
    exts = [Extension("kernels._recurrent", ["kernels/_recurrent.pyx"], depends=depends, define_macros=macros,
                      extra_compile_args=compile_args, extra_link_args=link_args)]
    if native and width in ("", "64") and _compiler_defines("-march=native", "__AVX512F__"):
        exts.append(Extension("kernels._recurrent_wide", ["kernels/_recurrent_wide.pyx"], depends=depends,
                              define_macros=macros + [("NN_TILE_VECTORS", 2)],
                              extra_compile_args=compile_args, extra_link_args=link_args))
    else:
        # an in-place build (pip install -e .) of another configuration must not leave the previous wide
        # tiles beside it: kernels would load them
        import glob
        from importlib.machinery import EXTENSION_SUFFIXES

        for suffix in EXTENSION_SUFFIXES:
            for stale in glob.glob(os.path.join(os.path.dirname(os.path.abspath(__file__)), "kernels",
                                                "_recurrent_wide" + suffix)):
                print(f"removing {stale}: this build has no wide tiles")
                os.remove(stale)
    directives = {
        "language_level": 3,
        "boundscheck": debug,
        "wraparound": debug,
        "initializedcheck": debug,
        "cdivision": True,
        "embedsignature": True,
    }
    # force: the directives depend on the environment, which cythonize cannot see.
    return cythonize(exts, compiler_directives=directives, force=True, quiet=True)


setup(
    name="nnforecast",
    version="0.1.0",
    description="Nightly neural-network forecasting pipeline: a NumPy NN core, Cython RNN kernels, Prefect flows",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.10",
    packages=find_packages(include=["nncore", "nncore.*", "kernels", "kernels.*", "flows", "flows.*"]),
    ext_modules=kernel_extensions(),
    # nncore needs only NumPy; the pipeline (flows/) needs the rest.
    install_requires=["numpy>=1.24", "scipy>=1.11", "prefect>=3.9,<4", "mlflow>=3.17,<4", "matplotlib>=3.8",
                      "prefect-dask>=0.3.7,<0.4"],
    extras_require={
        # the statistical baselines (AutoETS, AutoARIMA, AutoTheta) the reports compare every model with
        "stats": ["statsforecast>=2.1,<3"],
        # a PostgreSQL forecast ledger (--ledger-url postgresql+psycopg://…): the psycopg 3 driver
        "postgres": ["psycopg[binary]>=3.1,<4"],
        "test": ["pytest>=7", "hypothesis>=6", "torch==2.13.0", "statsforecast>=2.1,<3", "psycopg[binary]>=3.1,<4"],
    },
)
