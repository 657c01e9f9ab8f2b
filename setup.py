"""Build script: the pure-Python packages and (from the kernels issue on) the Cython kernels.

Metadata lives here rather than in pyproject.toml so the extension build can be configured in
code; pyproject.toml only declares the build requirements.
"""
from setuptools import find_packages, setup


def kernel_extensions():
    """Cython extensions of ``kernels/`` (none yet)."""
    return []


setup(
    name="nnforecast",
    version="0.1.0",
    description="Nightly neural-network forecasting pipeline: a NumPy NN core, Cython RNN kernels, Prefect flows",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.10",
    packages=find_packages(include=["nncore", "nncore.*", "kernels", "kernels.*"]),
    ext_modules=kernel_extensions(),
    install_requires=["numpy>=1.24"],
    extras_require={
        "test": ["pytest>=7", "torch==2.13.0"],
    },
)
