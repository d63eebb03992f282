"""Parameter and MAC counting, checked against hand counts; the zoo table."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vitlocal.attention import Attention
from vitlocal.bench import count_macs, count_params, format_rate, format_zoo_table, throughput, timm_model, zoo_rows
from vitlocal.cli import main
from vitlocal.lattice import img2seq
from vitlocal.models import create_model


class _TinyViT(nn.Module):
    """Patchify (conv p=s=4) -> one attention layer -> mean -> head, for hand-countable MACs."""

    def __init__(self, dim: int = 16, heads: int = 2, classes: int = 5) -> None:
        super().__init__()
        self.embed = nn.Conv2d(3, dim, 4, stride=4)
        self.attn = Attention(dim, heads)
        self.head = nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.attn(img2seq(self.embed(x))).mean(1))


def test_macs_count_convs_linears_and_the_attention_matmuls():
    model, n, c = _TinyViT(), 16, 16  # a 16 px image gives 4 x 4 = 16 tokens
    expected = (
        n * c * 3 * 4 * 4  # patch conv: one 3*4*4 dot product per token and channel
        + n * c * 3 * c  # fused qkv Linear
        + 2 * n * n * c  # Q K^T and A V over all heads (n*n*d per head, heads*d = c)
        + n * c * c  # output projection
        + c * 5  # classifier head
    )
    assert count_macs(model, 16) == expected


def test_count_params_separates_frozen_parameters():
    model = _TinyViT()
    model.embed.weight.requires_grad_(False)
    total = sum(p.numel() for p in model.parameters())
    assert count_params(model) == total
    assert count_params(model, trainable_only=True) == total - model.embed.weight.numel()


def test_throughput_reports_images_per_second():
    assert throughput(_TinyViT(), img_size=16, batch_size=4, steps=2, warmup=1, backward=True, device="cpu") > 0


def test_zoo_rows_and_table_put_ours_beside_the_paper(capsys):
    rows = zoo_rows(["deit_tiny"])
    assert rows[0]["params_m"] == count_params_of("deit_tiny") / 1e6
    assert rows[0]["paper_params_m"] == 5.7
    table = format_zoo_table(rows)
    assert "| deit_tiny | 224 | 5.72 | 5.7 | +0.02 |" in table
    assert main(["zoo", "deit_tiny"]) == 0
    assert "| deit_tiny | 224 |" in capsys.readouterr().out
    assert main(["zoo", "no_such_model"]) == 2


def count_params_of(name: str) -> int:
    from vitlocal import create_model

    with torch.device("meta"):
        return count_params(create_model(name))


def test_rates_keep_three_significant_figures() -> None:
    assert [format_rate(v) for v in (12345.67, 123.45, 12.345, 0.41234)] == ["12345.7", "123.5", "12.3", "0.412"]


def test_bench_runs_each_model_at_its_native_size_and_says_why_timm_is_missing(capsys) -> None:
    from vitlocal import cli

    assert timm_model("deit_nano", 32) == (None, "timm has no deit_nano")
    argv = ["bench", "--model", "deit_nano", "swin_nano", "--batch-size", "2", "--steps", "1", "--device", "cpu"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "| deit_nano | 32 | vitlocal | no |" in out and "| swin_nano | 64 | vitlocal | no |" in out
    assert "drop path 0 for every implementation" in out


@pytest.mark.parametrize(
    "name",
    ["deit_nano", "localvit_nano", "crossvit_nano", "cvt_nano", "cloformer_nano", "swin_nano", "slide_swin_nano"],
)
def test_every_family_compiles_as_one_graph(name: str) -> None:
    """``torch.compile(fullgraph=True)`` traces the whole forward (no graph break from a shape-dependent Python
    branch or a host read); the eager backend checks the tracing without generating kernels, which a CPU test
    cannot afford."""
    import torch._dynamo

    torch._dynamo.reset()
    model = create_model(name).eval()
    x = torch.randn(2, 3, model.config.img_size, model.config.img_size)
    with torch.no_grad():
        torch.testing.assert_close(torch.compile(model, backend="eager", fullgraph=True)(x), model(x))
