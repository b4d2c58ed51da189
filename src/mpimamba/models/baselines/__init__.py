"""The seven methods MPI-Mamba is compared with, one file each, all built through `mpimamba.models.build`."""
