"""jpg-jax: JAX/Flax reimplementation of JPG (COLING 2022)."""

from setuptools import find_packages, setup

setup(
    name="jpg-jax",
    version="0.1.0",
    description="JAX/Flax reimplementation of JPG: jointly learning disease prediction and radiology "
                "report generation (COLING 2022).",
    packages=find_packages(include=["jpg_jax", "jpg_jax.*"]),
    python_requires=">=3.10",
    install_requires=[
        "jax>=0.10.2,<0.13",
        "flax>=0.12.8,<0.13",
        "optax>=0.2.8,<0.3",
        "orbax-checkpoint>=0.12.8,<0.13",
        "tensorflow-datasets>=4.9.10,<5",   # builders + tfds.data_source, no TensorFlow runtime
        "array_record>=0.8.6,<0.9",         # the builders' file format
        "importlib_resources>=6",           # needed by TFDS without TensorFlow
        "grain>=0.2.18,<0.3",               # input pipeline
        "tensorboardX>=2.6,<3",             # TensorBoard files without TensorFlow (clu's writers need TF)
        "scipy>=1.11",                      # paired t-test (Table 2's dagger)
        "ml-collections>=1.1,<2",
        "nltk>=3.9,<4",
        "pycocoevalcap==1.2",               # BLEU / METEOR / ROUGE-L as the paper computed them
        "etils[epath]>=1.15",
        "absl-py>=2.1",
        "numpy>=2.0,<3",
        "pillow>=10",
        "matplotlib>=3.8",                  # attention maps and curves
    ],
    extras_require={
        # torch==2.13.0 is the CPU wheel; the parity tests compare against hand-written references.
        "test": ["pytest>=8", "pytest-xdist>=3.5", "torch==2.13.0", "psutil>=5"],
        # TPU VMs (launch_tpu.sh): libtpu, and gs:// workdirs through etils.epath (fsspec + gcsfs).
        "tpu": ["jax[tpu]>=0.10.2,<0.13", "gcsfs>=2024.2"],
    },
)
