"""MPI physics: Langevin magnetisation, the x-space PSF model, the time-domain simulator, phantoms."""
