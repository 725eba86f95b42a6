"""Which base-model weights a bridge was trained on, told apart without hashing gigabytes.

A bridge's weights fit only the base models they were trained with. A path says little: a copy
elsewhere is the same model, and a folder replaced by a fine-tune of the same shape is not, yet
loads without error. Each weights file the bridge's base models load from is fingerprinted by its
size and three 64 KiB samples (its start, middle and end): a fine-tune changes every tensor, so the
samples differ, and reading them takes milliseconds even for a 7B language model.
"""
import hashlib
from pathlib import Path

from .model_paths import DENOISER_SUBFOLDERS

# what a diffusers or transformers folder keeps its weights in (single files and the shards of an index)
WEIGHTS_SUFFIXES = (".safetensors", ".bin")
SAMPLE_BYTES = 1 << 16


def file_fingerprint(path: Path) -> str:
    """sha256 of a file's size and its first, middle and last ``SAMPLE_BYTES``, in hex (16 digits)."""
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with path.open("rb") as file:
        for offset in sorted({0, max(size // 2 - SAMPLE_BYTES // 2, 0), max(size - SAMPLE_BYTES, 0)}):
            file.seek(offset)
            digest.update(file.read(SAMPLE_BYTES))
    return digest.hexdigest()[:16]


def weights_fingerprints(location: str, role: str) -> dict[str, str] | None:
    """``{relative path: file_fingerprint}`` of the weights files a base model loads from: the
    top-level files of a language model folder (``role`` ``text_encoder``), the denoiser and VAE
    subfolders of a vision model's. None for a hub id (its id names it; only a local folder can change)."""
    folder = Path(location)
    if not folder.is_dir():
        return None
    places = [folder] if role == "text_encoder" else [folder / name for name in (*DENOISER_SUBFOLDERS, "vae")]
    return {str(path.relative_to(folder)): file_fingerprint(path)
            for place in places if place.is_dir() for path in sorted(place.iterdir())
            if path.is_file() and path.suffix in WEIGHTS_SUFFIXES and not path.name.startswith(".")}


def differing_weights(recorded: dict[str, str], current: dict[str, str]) -> list[str] | None:
    """The weights files whose fingerprints differ, of those both records hold (a variant one folder
    lacks, such as ``*.fp16.safetensors``, is not compared); None when they share no file."""
    shared = sorted(set(recorded) & set(current))
    return [name for name in shared if recorded[name] != current[name]] if shared else None
