"""Image files, paired folder datasets, the simulated stream, patches and augmentations."""
