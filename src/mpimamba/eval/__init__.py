"""Metrics (PSNR, SSIM, nRMSE), evaluation tables and figures."""
