"""One training loop for every method, MPI-Mamba's two phases, distributed data parallel."""
