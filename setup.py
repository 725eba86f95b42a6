"""Install diffengine; configs ship inside the package (diffengine/.mim/configs) as OpenMMLab does."""
import shutil
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).resolve().parent


def read_requirements(name: str) -> list[str]:
    lines = (ROOT / "requirements" / name).read_text().splitlines()
    return [line.split("#")[0].strip() for line in lines if line.split("#")[0].strip()]


def package_configs() -> None:
    """Copy configs/ into the package so config names resolve after a non-editable install."""
    source, target = ROOT / "configs", ROOT / "diffengine" / ".mim" / "configs"
    if source.is_dir():
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))


def version() -> str:
    scope: dict = {}
    exec((ROOT / "diffengine" / "version.py").read_text(), scope)
    return scope["__version__"]


package_configs()
setup(
    name="diffengine",
    version=version(),
    description="Config-driven training for text-to-image diffusion: LaVi-Bridge on MMEngine",
    long_description=(ROOT / "README.md").read_text(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(exclude=("tests", "tests.*", "configs", "configs.*")),
    package_data={"diffengine": [".mim/configs/**/*.py", ".mim/configs/**/*.md", "assets/**/*"]},
    include_package_data=True,
    install_requires=read_requirements("runtime.txt"),
    extras_require={"tests": read_requirements("tests.txt") + read_requirements("shapes.txt"),
                    "shapes": read_requirements("shapes.txt"),
                    "tensorboard": ["tensorboard"]},
    entry_points={"console_scripts": ["diffengine=diffengine.entry_point:cli"]},
    license="Apache-2.0",
)
