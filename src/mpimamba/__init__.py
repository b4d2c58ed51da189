"""mpimamba: anisotropic-to-isotropic restoration of Magnetic Particle Imaging images.

Subpackages: `physics` (Langevin / x-space simulator, phantoms), `data` (file formats, datasets),
`models` (MPI-Mamba and the seven baselines, one `build` entry point), `train`, `eval`, and the
`mpimamba` command (`cli`).
"""

__version__ = "0.1.0"
