"""Training-free methods: deconvolution with the known x-space PSF (DESIGN §3, "Training-free methods").

They answer the first question an MPI researcher asks of a network: how much does it add over classical
deconvolution with the PSF of the scan? Registered like the networks (`build("wiener")`), saved and loaded
like them, run by evaluate, calibrate and the experiments; "training" one picks its single setting on the
validation pairs (`PSFDeconvolution.fit`).
"""
