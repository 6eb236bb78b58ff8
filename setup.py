"""headgen: text prompt -> production-ready 3D head (DreamFace, HeadSculpt, HeadArtist)."""

from pathlib import Path

from setuptools import find_packages, setup

README = Path(__file__).with_name("README.md")

setup(
    name="headgen",
    version="0.1.0",
    description="Text-to-3D-head framework: DreamFace, HeadSculpt and HeadArtist as composable recipes",
    long_description=README.read_text(encoding="utf-8") if README.is_file() else "",
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.10",
    packages=find_packages(include=["headgen", "headgen.*", "guidance", "guidance.*",
                                    "representations", "representations.*",
                                    "converters", "converters.*", "selection", "selection.*"]),
    include_package_data=True,
    package_data={"headgen": ["heads/data/*", "heads/data/ict-facekit/*"]},
    install_requires=[
        # 2.13.0 is pinned so pip takes the CPU wheel where it is provided; CUDA users may install
        # their own torch build first (any 2.13.x satisfies this).
        "torch==2.13.0",
        "numpy>=1.26,<3",
        "diffusers>=0.35,<1",
        # from_pretrained builds full-size models without a second random-initialised copy in memory
        "accelerate>=1.0,<2",
        "transformers>=4.56,<6",
        "safetensors>=0.4,<1",
        "pytorch-lightning>=2.5,<3",
        "tensorboard>=2.16,<3",
        "omegaconf>=2.3,<3",
        "PyYAML>=6,<7",
        "tqdm>=4.66,<5",
        "filelock>=3.12,<4",  # one build of a shared cache entry when processes race (dry-run models)
        "trimesh>=4,<6",
        "pygltflib>=1.16,<2",
        "xatlas>=0.0.9,<0.1",
        "imageio>=2.34,<3",
        "imageio-ffmpeg>=0.5,<1",
        "Pillow>=10,<14",
        "matplotlib>=3.8,<4",
        "mediapipe>=0.10.14,<2",
        # OpenCV as mediapipe pulls it (the contrib wheel: landmark maps, the Haar face cascade of
        # headgen.bench.views); opencv-python would install a second cv2 over it.
        "opencv-contrib-python>=4.8,<5",  # OpenCV 5 ships no CascadeClassifier (seen on a GPU machine)
        "scipy>=1.11,<2",
        # the 3D web viewer (--view, --viewer); its wheel bundles the web client
        "viser>=1.1.1,<2",
    ],
    extras_require={
        "dev": ["pytest>=8,<10", "pytest-xdist>=3.5,<4", "ruff>=0.6", "ray>=2.9,<3",
                # drives Debian's chromium + chromium-driver in the viewer tests (no browser download)
                "selenium>=4.20,<5"],
        # GPU backends are built from source against your CUDA toolkit; see README "GPU backends".
        "gpu": [],
        "ray": ["ray[default]>=2.9,<3"],
    },
    entry_points={"console_scripts": ["headgen=headgen.cli:main", "headgen-train=headgen.train.__main__:main"]},
)
