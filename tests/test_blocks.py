"""The shared modelling blocks: masked diffusion (loss, samplers, infilling) and the transformer denoiser.

Domain-free: the tests use made-up vocabularies, no molecule or music code.
"""

from __future__ import annotations

import math

import pytest
import torch

from genforge.core.blocks import MaskedDiffusion, TransformerConfig, TransformerDenoiser, gumbel_noise, nucleus

MASK_ID, PAD_ID = 1, 0
DIFFUSION = MaskedDiffusion(mask_id=MASK_ID, pad_id=PAD_ID)


class _OneSurePosition(torch.nn.Module):
    """A stand-in denoiser: uniform over 10 tokens everywhere but position SURE, where one token is near certain."""

    SURE, VOCAB = 5, 12

    def __init__(self) -> None:
        super().__init__()
        self.inputs: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor, pad_mask: torch.Tensor) -> torch.Tensor:
        self.inputs.append(x.clone())
        logits = torch.zeros(*x.shape, self.VOCAB)
        logits[:, self.SURE, 2] = 10.0
        return logits


def _first_revealed(model: _OneSurePosition) -> torch.Tensor:
    """Per sequence, the position revealed in the first round (the first with several is left out)."""
    revealed = model.inputs[1] != MASK_ID
    assert (revealed.sum(1) == 1).all()
    return revealed.float().argmax(1)


def test_samplers_reveal_the_surest_position_first():
    lengths = torch.full((2000,), 8)
    margin = _OneSurePosition()
    x = DIFFUSION.sample(margin, lengths, steps=8, temperature=1.0, strategy="margin", generator=torch.Generator().manual_seed(0))
    assert (_first_revealed(margin) == _OneSurePosition.SURE).all()  # top-2 margin 1.0 there, 0 elsewhere
    assert not (x == MASK_ID).any() and (x[:, _OneSurePosition.SURE] == 2).float().mean() > 0.99
    # confidence: log p of the drawn token plus Gumbel noise, so the sure position (log p ~ 0 against
    # log 0.1 elsewhere) comes first with probability 1 / (1 + 7 * 0.1) = 0.59; a fixed order gives 0 or 1.
    conf = _OneSurePosition()
    DIFFUSION.sample(conf, lengths, steps=8, temperature=1.0, strategy="confidence", generator=torch.Generator().manual_seed(0))
    first = _first_revealed(conf)
    assert 0.53 < (first == _OneSurePosition.SURE).float().mean() < 0.65
    assert len(first.unique()) == 8  # the noise spreads the rest over every position
    with pytest.raises(ValueError, match="margin, confidence, ancestral"):
        DIFFUSION.sample(margin, lengths[:2], strategy="greedy")


def test_nucleus_sampling_keeps_the_smallest_set_that_holds_top_p():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05], [0.05, 0.15, 0.3, 0.5]])
    assert torch.allclose(nucleus(probs, 0.8), torch.tensor([[0.625, 0.375, 0, 0], [0, 0, 0.375, 0.625]]))
    assert torch.allclose(nucleus(probs, 0.81), torch.tensor([[0.5, 0.3, 0.15, 0], [0, 0.15, 0.3, 0.5]]) / 0.95)
    assert torch.equal(nucleus(probs, 1.0), probs)
    assert torch.equal(nucleus(probs, 1e-6), torch.tensor([[1.0, 0, 0, 0], [0, 0, 0, 1.0]]))  # always the top token
    # In the sampler: uniform predictions everywhere but the sure position, whose near-certain token a
    # tiny nucleus always draws; elsewhere the nucleus of a uniform distribution is one token (the first in sort order)
    model = _OneSurePosition()
    x = DIFFUSION.sample(model, torch.full((50,), 8), steps=8, temperature=1.0, generator=torch.Generator().manual_seed(0), top_p=1e-3)
    assert (x[:, _OneSurePosition.SURE] == 2).all()


def test_a_sampling_constraint_is_obeyed_keeps_given_cells_and_never_leaves_nothing_to_draw():
    from genforge.core.blocks import Autoregressive

    torch.manual_seed(0)
    net = TransformerDenoiser(TransformerConfig(d_model=32, n_heads=2, n_layers=1), vocab_size=8, max_len=12, causal=True).eval()
    process = Autoregressive(start_id=0)
    given = torch.zeros(64, 12, dtype=torch.long)
    given[:, 5] = 3  # a given cell, kept whatever the rule says
    seen = []

    def rule(x: torch.Tensor, i: int) -> torch.Tensor:
        seen.append(i)
        banned = torch.zeros(len(x), 8, dtype=torch.bool)
        if i % 2:
            banned[:, 1:] = True  # odd positions: everything banned -> the unconstrained prediction
        else:
            banned[:, 1:5] = True  # even positions: only 5, 6, 7 allowed
            banned[:, 5] = x[:, i - 1] == 5 if i else False  # and never 5 after a 5: the rule sees what was drawn
        return banned

    x = process.sample(net, given, unknown_id=0, temperature=1.0, generator=torch.Generator().manual_seed(0), constraint=rule)
    assert seen == [i for i in range(12) if i != 5]  # asked for each cell it draws, in order, not for the given one
    assert (x[:, 5] == 3).all()
    even = x[:, [0, 2, 4, 6, 8, 10]]
    assert ((even >= 5) & (even <= 7)).all()
    after_five = torch.stack([x[:, i - 1] == 5 for i in (2, 4, 8, 10)], 1)
    assert after_five.any() and not (after_five & torch.stack([x[:, i] == 5 for i in (2, 4, 8, 10)], 1)).any()
    odd = x[:, [1, 3, 7, 9, 11]]
    assert ((odd >= 1) & (odd <= 7)).all() and len(odd.unique()) > 3  # all banned: drawn freely (not the unknown id)


def test_flat_weighting_is_the_mean_masked_cross_entropy():
    torch.manual_seed(0)
    net = TransformerDenoiser(TransformerConfig(d_model=32, n_layers=1, n_heads=2), 12, 10)
    tokens = torch.randint(2, 12, (64, 10))
    pad_mask = torch.arange(10)[None, :] < torch.randint(3, 11, (64,))[:, None]
    torch.manual_seed(1)
    flat, m_flat = MaskedDiffusion(MASK_ID, PAD_ID, weighting="flat").loss(net, tokens, pad_mask)
    torch.manual_seed(1)
    elbo, m_elbo = DIFFUSION.loss(net, tokens, pad_mask)
    assert flat == m_flat["masked_ce"] == m_elbo["masked_ce"]  # the same draws, the masked cross-entropy itself
    # the bound: sum over masked cells of ce / t, per real token; its expectation over the masks is the mean ce
    assert not torch.isclose(elbo, flat) and 0.5 < float(elbo / flat) < 2
    flat.backward()
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)
    with pytest.raises(ValueError, match="unknown loss weighting 'mdlm'; use one of elbo, flat"):
        MaskedDiffusion(MASK_ID, PAD_ID, weighting="mdlm")


def test_gumbel_noise_is_finite_and_standard():
    g = gumbel_noise(torch.rand(200_000, generator=torch.Generator().manual_seed(0)))
    assert torch.isfinite(g).all() and torch.isfinite(gumbel_noise(torch.tensor([0.0, 1.0]))).all()
    assert abs(g.mean().item() - 0.5772) < 0.01 and abs(g.var().item() - math.pi**2 / 6) < 0.03


@pytest.mark.parametrize("strategy", ["margin", "confidence", "ancestral"])
def test_infilling_keeps_the_given_cells_and_fills_the_rest(strategy):
    """Given cells never change; padding stays padding; specials are never generated."""
    torch.manual_seed(0)
    model = TransformerDenoiser(TransformerConfig(d_model=32, n_heads=2, n_layers=1), vocab_size=9, max_len=16).eval()
    given = torch.randint(2, 9, (6, 16), generator=torch.Generator().manual_seed(1))
    hole = torch.rand(6, 16, generator=torch.Generator().manual_seed(2)) < 0.6
    given[hole] = MASK_ID
    lengths = torch.tensor([16, 16, 10, 12, 16, 5])
    x = DIFFUSION.sample(model, lengths, steps=5, strategy=strategy, generator=torch.Generator().manual_seed(3), given=given)
    real = torch.arange(16)[None] < lengths[:, None]
    assert torch.equal(x[real & ~hole], given[real & ~hole])
    assert (x[~real] == PAD_ID).all()
    assert ((x[real] >= 2) & (x[real] < 9)).all()  # every hole filled, never with the mask or padding
    again = DIFFUSION.sample(model, lengths, steps=5, strategy=strategy, generator=torch.Generator().manual_seed(3), given=given)
    assert torch.equal(x, again)


def test_a_grid_without_padding_learns_to_infill_a_rule():
    """A tiny denoiser trained on sequences whose second half mirrors the first infills the mirror."""
    torch.manual_seed(0)
    process = MaskedDiffusion(mask_id=0)  # a fixed-length grid: no padding id
    model = TransformerDenoiser(TransformerConfig(d_model=48, n_heads=4, n_layers=2), vocab_size=6, max_len=8)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)

    def batch(n: int, gen: torch.Generator) -> torch.Tensor:
        half = torch.randint(1, 6, (n, 4), generator=gen)
        return torch.cat([half, half.flip(1)], 1)

    gen = torch.Generator().manual_seed(1)
    before = process.masked_nll(model, batch(256, gen), generator=torch.Generator().manual_seed(9))
    for _ in range(300):
        loss, _ = process.loss(model, batch(64, gen))
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    test = batch(200, torch.Generator().manual_seed(7))
    after = process.masked_nll(model, test, generator=torch.Generator().manual_seed(9))
    assert before > 1.4 and after < 0.6 * before  # log 5 = 1.61 for a uniform guess
    given = test.clone()
    given[:, 4:] = 0  # ask for the second half
    x = process.sample(model, steps=4, strategy="margin", generator=torch.Generator().manual_seed(0), given=given)
    assert torch.equal(x[:, :4], test[:, :4])
    assert (x[:, 4:] == test[:, 4:]).float().mean() > 0.9


def test_a_causal_denoiser_does_not_see_ahead_and_autoregressive_sampling_keeps_given_cells():
    from genforge.core.blocks import Autoregressive, TransformerConfig, TransformerDenoiser

    torch.manual_seed(0)
    net = TransformerDenoiser(TransformerConfig(d_model=32, n_heads=2, n_layers=2), vocab_size=12, max_len=16, causal=True).eval()
    x = torch.randint(0, 10, (3, 16))
    y = x.clone()
    y[:, 9:] = (y[:, 9:] + 1) % 10  # change only the later tokens
    ones = torch.ones_like(x, dtype=torch.bool)
    with torch.no_grad():
        assert torch.allclose(net(x, ones)[:, :9], net(y, ones)[:, :9], atol=1e-6)
        assert not torch.allclose(net(x, ones)[:, 9:], net(y, ones)[:, 9:])
    ar = Autoregressive(start_id=11)
    given = torch.full((4, 16), 10)  # 10: the cells to draw
    given[:, ::3] = 7
    out = ar.sample(net, given, unknown_id=10, generator=torch.Generator().manual_seed(0))
    assert (out[:, ::3] == 7).all() and not (out == 10).any() and not (out == 11).any()
    again = ar.sample(net, given, unknown_id=10, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out, again)  # the generator decides the draws
    # training on one repeated sequence drives its next-token loss towards zero
    seq = torch.arange(16).remainder(10)[None].repeat(8, 1)
    opt = torch.optim.Adam(net.parameters(), 3e-3)
    net.train()
    first = ar.loss(net, seq)[0].item()
    for _ in range(60):
        loss, _ = ar.loss(net, seq)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.2 * first
    # a target mask: only the marked positions count (a sequence and its end token, not the padding after it)
    targets = torch.zeros_like(seq, dtype=torch.bool)
    targets[:, :5] = True
    with torch.no_grad():
        logits = net(ar._inputs(seq), torch.ones_like(seq, dtype=torch.bool))
        by_hand = torch.nn.functional.cross_entropy(logits[:, :5].transpose(1, 2), seq[:, :5])
        assert torch.allclose(ar.loss(net, seq, targets)[0], by_hand, atol=1e-6)


def test_cached_decoding_gives_the_full_forward_pass_logits_and_the_same_samples():
    """TransformerDenoiser.decode with a key/value cache: the same logits as the full causal pass, position by position or in chunks."""
    from genforge.core.blocks import Autoregressive, TransformerConfig, TransformerDenoiser

    torch.manual_seed(0)
    net = TransformerDenoiser(TransformerConfig(d_model=32, n_heads=2, n_layers=2), vocab_size=12, max_len=16, causal=True).eval()
    x = torch.randint(0, 10, (3, 16))
    with torch.no_grad():
        full = net(x, torch.ones_like(x, dtype=torch.bool))
        caches = [{} for _ in net.blocks]
        pieces = (
            [net.decode(x[:, :5], caches)] + [net.decode(x[:, i : i + 1], caches) for i in range(5, 11)] + [net.decode(x[:, 11:], caches)]
        )
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="needs a causal model"):
        TransformerDenoiser(TransformerConfig(d_model=32, n_heads=2, n_layers=1), 12, 16).decode(x[:, :1], [{}])

    class Uncached(torch.nn.Module):  # the same network without decode: the whole prefix every time
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, tokens, pad_mask):
            return self.inner(tokens, pad_mask)

    ar = Autoregressive(start_id=11)
    given = torch.full((4, 16), 10)
    given[:, 3] = 7
    given[:, 8:10] = 2
    a = ar.sample(net, given, unknown_id=10, generator=torch.Generator().manual_seed(1))
    b = ar.sample(Uncached(net), given, unknown_id=10, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and (a[:, 3] == 7).all() and (a[:, 8:10] == 2).all()
