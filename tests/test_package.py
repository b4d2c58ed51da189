import subprocess
import sys

import pytest
import torch

from mpimamba.cli import main
from mpimamba.models import Restorer
from mpimamba.models.base import pad_to_multiple


def test_the_command_line_parser_does_not_import_torch():
    """`mpimamba --help` stays fast: the CLI names the scan backends and training terms itself (cli.SCAN_BACKENDS,
    cli.TERM_HELP) instead of importing the modules that define them, which import torch."""
    code = "import sys, mpimamba.cli as c; c.build_parser(); print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_info_runs(capsys):
    assert main(["info"]) == 0
    assert "mpimamba" in capsys.readouterr().out


@pytest.mark.parametrize("h,w", [(37, 53), (2, 3), (64, 64)])
def test_pad_to_multiple(h, w):
    x = torch.randn(1, 1, h, w)
    xp, size = pad_to_multiple(x, 8)
    assert size == (h, w)
    assert xp.shape[-2] % 8 == 0 and xp.shape[-1] % 8 == 0
    assert torch.equal(xp[..., :h, :w], x)


def test_restorer_crops_back():
    class Twice(Restorer):
        size_multiple = 16

        def restore(self, x):
            assert x.shape[-1] % 16 == 0 and x.shape[-2] % 16 == 0
            return 2 * x

    x = torch.randn(2, 1, 37, 53)
    assert torch.equal(Twice()(x), 2 * x)


def test_licence_and_citation_are_shipped():
    """pyproject says MIT; the LICENSE says so too, and CITATION.cff cites the paper and this package."""
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    assert 'license = "MIT"' in (root / "pyproject.toml").read_text()
    assert (root / "LICENSE").read_text().startswith("MIT License")
    citation = (root / "CITATION.cff").read_text()
    assert "cff-version: 1.2.0" in citation and "preferred-citation:" in citation
    assert "MPI-Mamba: Latent Feature Fusion Mamba" in citation and "year: 2026" in citation
