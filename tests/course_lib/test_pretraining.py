"""course_lib.pretraining against independent oracles, never against itself.

Oracles written out here: F.mse_loss (reconstruction loss), nn.Sequential of nn.Linear + nn.Sigmoid
(the stack of fixed layers), F.cross_entropy with ignore_index (the masked LM loss), the same model run on
each sentence alone (padding masked out), and a Transformer forward pass written with PyTorch's
F.scaled_dot_product_attention (the LM). Then the layer-wise procedure: fixed levels really do not change,
fine-tuning changes every parameter; training lowers its loss; data splits do not leak; grading accepts
the references and rejects plausible mistakes.
"""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from course_lib import data, grading
from course_lib.attention import core
from course_lib.pretraining import autoencoder, layerwise, lm
from course_lib.pretraining.autoencoder import AutoencoderLayer, reconstruction_loss, train_autoencoder
from course_lib.pretraining.layerwise import DeepNet, RecipeConfig, encode_stack
from course_lib.pretraining.lm import masked_lm_loss, sentence_log_likelihood

pytestmark = pytest.mark.pretraining

seeds = st.integers(0, 2**31 - 1)
float_dtypes = st.sampled_from([torch.float32, torch.float64])
TOL = {torch.float32: dict(atol=1e-5, rtol=1e-5), torch.float64: dict(atol=1e-12, rtol=1e-12)}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """The models here are tiny: one thread avoids synchronisation costs (several times faster on a busy
    machine); the previous setting is restored for the other test modules."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def digits_flat():
    s = data.digits()
    return s.x_train.flatten(1), s.y_train, s.x_test.flatten(1), s.y_test


# =========================================================================================================
# Autoencoder: reconstruction loss ||x − DECODER(ENCODER(x))||²
# =========================================================================================================
@given(N=st.integers(1, 20), d=st.integers(1, 70), seed=seeds, dtype=float_dtypes)
def test_reconstruction_loss_matches_mse_sum_over_n(N, d, seed, dtype):
    g = gen(seed)
    x = torch.rand(N, d, generator=g, dtype=torch.float64).to(dtype)
    x_hat = torch.rand(N, d, generator=g, dtype=torch.float64).to(dtype)
    expected = F.mse_loss(x_hat, x, reduction="sum") / N                    # Σ_n ||x_n − x'_n||² / N
    got = reconstruction_loss(x, x_hat)
    assert got.shape == () and got.dtype == dtype
    torch.testing.assert_close(got, expected, **TOL[dtype])


def test_reconstruction_loss_by_hand_and_zero():
    x = torch.tensor([[1.0, 0.0], [0.5, 0.5]], dtype=torch.float64)
    x_hat = torch.tensor([[0.0, 0.0], [0.5, 1.5]], dtype=torch.float64)
    assert reconstruction_loss(x, x_hat).item() == pytest.approx((1.0 + 1.0) / 2)
    assert reconstruction_loss(x, x.clone()).item() == 0.0


def test_reconstruction_loss_gradient():
    g = gen(3)
    x = torch.rand(4, 5, generator=g, dtype=torch.float64)
    x_hat = torch.rand(4, 5, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda xh: reconstruction_loss(x, xh), (x_hat,))
    reconstruction_loss(x, x_hat).backward()
    torch.testing.assert_close(x_hat.grad, 2 * (x_hat.detach() - x) / 4)     # d/dx' of Σ||x − x'||² / N


def test_reconstruction_loss_rejects_bad_shapes():
    with pytest.raises(ValueError, match="same shape"):
        reconstruction_loss(torch.zeros(3, 4), torch.zeros(3, 5))
    with pytest.raises(ValueError):
        reconstruction_loss(torch.zeros(4), torch.zeros(4))


def test_autoencoder_layer_is_sigmoid_encoder_then_sigmoid_decoder():
    torch.manual_seed(0)
    ae = AutoencoderLayer(6, 3).double()
    x = torch.rand(5, 6, dtype=torch.float64)
    W, b, W2, c = ae.encoder.weight, ae.encoder.bias, ae.decoder.weight, ae.decoder.bias
    z = 1 / (1 + torch.exp(-(x @ W.T + b)))
    torch.testing.assert_close(ae.encode(x), z)
    torch.testing.assert_close(ae(x), 1 / (1 + torch.exp(-(z @ W2.T + c))))


def test_autoencoder_layer_shares_the_given_encoder():
    enc = nn.Linear(4, 2)
    ae = AutoencoderLayer(4, 2, encoder=enc)
    assert ae.encoder is enc
    with pytest.raises(ValueError, match="encoder maps"):
        AutoencoderLayer(4, 3, encoder=enc)


def test_training_decreases_reconstruction_loss(digits_flat):
    x = digits_flat[0][:400]
    torch.manual_seed(0)
    ae = AutoencoderLayer(64, 32)
    with torch.no_grad():
        before = reconstruction_loss(x, ae(x)).item()
    history = train_autoencoder(ae, x, epochs=4, lr=1.0, batch_size=16, generator=gen(0))
    with torch.no_grad():
        after = reconstruction_loss(x, ae(x)).item()
    assert len(history) == 4
    assert history[-1] < history[0] and after < 0.7 * before, (before, history, after)


def test_train_autoencoder_uses_the_given_loss():
    calls = []

    def spy(x, x_hat):
        calls.append(x.shape)
        return reconstruction_loss(x, x_hat)
    train_autoencoder(AutoencoderLayer(3, 2), torch.rand(10, 3), epochs=2, lr=0.1, batch_size=4,
                      generator=gen(0), loss_fn=spy)
    assert calls == [(4, 3), (4, 3), (2, 3)] * 2


# =========================================================================================================
# The stack of fixed layers
# =========================================================================================================
@given(dims=st.lists(st.integers(1, 12), min_size=1, max_size=5), N=st.integers(1, 6), seed=seeds, dtype=float_dtypes)
def test_encode_stack_matches_sequential_linear_sigmoid(dims, N, seed, dtype):
    torch.manual_seed(seed % 10_000)
    layers = [nn.Linear(a, b).to(dtype) for a, b in zip(dims[:-1], dims[1:])]
    oracle = nn.Sequential(*[m for layer in layers for m in (layer, nn.Sigmoid())])
    x = torch.rand(N, dims[0], generator=gen(seed), dtype=torch.float64).to(dtype)
    got = encode_stack(x, [m.weight for m in layers], [m.bias for m in layers])
    with torch.no_grad():
        torch.testing.assert_close(got, oracle(x), **TOL[dtype])


def test_encode_stack_keeps_leading_dimensions_and_no_level_is_identity():
    x = torch.rand(2, 3, 5)
    W, b = torch.randn(4, 5), torch.randn(4)
    torch.testing.assert_close(encode_stack(x, [W], [b]), torch.sigmoid(torch.einsum("btk,jk->btj", x, W) + b))
    assert torch.equal(encode_stack(x, [], []), x)


def test_encode_stack_rejects_mismatched_levels():
    with pytest.raises(ValueError, match="2 weight matrices but 1 bias"):
        encode_stack(torch.rand(2, 3), [torch.rand(3, 3), torch.rand(3, 3)], [torch.rand(3)])
    with pytest.raises(ValueError, match="level 1"):
        encode_stack(torch.rand(2, 3), [torch.rand(4, 5)], [torch.rand(4)])


def test_deep_net_forward_calls_the_given_encode():
    calls = []

    def spy(x, weights, biases):
        calls.append(len(weights))
        return encode_stack(x, weights, biases)
    net = DeepNet(6, (5, 4), 3, encode=spy)
    x = torch.rand(2, 6)
    h = torch.sigmoid(net.hidden[1](torch.sigmoid(net.hidden[0](x))))
    torch.testing.assert_close(net(x), net.output(h))
    assert calls == [2]
    net.features(x, levels=1)
    assert calls == [2, 1]


# =========================================================================================================
# Greedy layer-wise training: fixed levels do not change; fine-tuning updates all
# =========================================================================================================
def _snapshot(net: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def _level_changed(before, after, level: int) -> bool:
    return any(not torch.equal(before[f"hidden.{level}.{p}"], after[f"hidden.{level}.{p}"]) for p in ("weight", "bias"))


@pytest.mark.parametrize("objective", ["unsupervised", "supervised"])
def test_layerwise_training_fixes_lower_levels_and_leaves_upper_ones(objective, digits_flat):
    x, y = digits_flat[0][:200], digits_flat[1][:200]
    torch.manual_seed(0)
    net = DeepNet(64, (20, 16, 12), 10)
    g = gen(1)
    states = [_snapshot(net)]
    for level in range(3):
        if objective == "unsupervised":
            layerwise.pretrain_level_unsupervised(net, level, x, epochs=2, lr=0.5, batch_size=32, generator=g)
        else:
            layerwise.pretrain_level_supervised(net, level, x, y, epochs=2, lr=0.5, batch_size=32, generator=g)
        states.append(_snapshot(net))
        before, after = states[-2], states[-1]
        assert _level_changed(before, after, level), f"level {level + 1} was not trained"
        for other in range(3):
            if other != level:
                assert not _level_changed(before, after, other), \
                    f"training level {level + 1} changed level {other + 1}"
        assert all(not p.requires_grad for p in net.hidden[level].parameters()), "a trained level must be fixed"
        assert torch.equal(before["output.weight"], after["output.weight"]), "the output layer is not pre-trained"
    # level 1 is the same after levels 2 and 3 were trained as right after its own training
    for k in ("hidden.0.weight", "hidden.0.bias"):
        assert torch.equal(states[1][k], states[3][k])


def test_fixed_level_stays_fixed_even_with_its_gradient_requested_elsewhere(digits_flat):
    """A fixed level has requires_grad False: no optimiser over all parameters could move it."""
    torch.manual_seed(0)
    net = DeepNet(64, (8, 8), 10)
    layerwise.pretrain_level_unsupervised(net, 0, digits_flat[0][:64], epochs=1, lr=0.5, batch_size=16, generator=gen(0))
    before = _snapshot(net)
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=1.0)
    F.cross_entropy(net(digits_flat[0][:64]), digits_flat[1][:64]).backward()
    opt.step()
    assert net.hidden[0].weight.grad is None
    assert not _level_changed(before, _snapshot(net), 0)


def test_pretrain_layerwise_reconstruction_decreases_at_every_level(digits_flat):
    torch.manual_seed(0)
    net = DeepNet(64, (32, 24), 10)
    curves, autoencoders = layerwise.pretrain_layerwise(net, digits_flat[0][:300], objective="unsupervised",
                                                        epochs=4, lr=1.0, batch_size=16, generator=gen(0))
    assert len(curves) == 2 and len(autoencoders) == 2
    for level, curve in enumerate(curves):
        assert curve[-1] < curve[0], f"level {level + 1}: reconstruction loss {curve}"
    with pytest.raises(ValueError, match="objective"):
        layerwise.pretrain_layerwise(net, digits_flat[0], objective="both", epochs=1, lr=1.0, batch_size=16,
                                     generator=gen(0))


def test_deep_net_fine_tuning_updates_every_parameter(digits_flat):
    x, y = digits_flat[0][:200], digits_flat[1][:200]
    torch.manual_seed(0)
    net = DeepNet(64, (20, 16), 10)
    layerwise.pretrain_layerwise(net, x, objective="unsupervised", epochs=1, lr=0.5, batch_size=32, generator=gen(0))
    assert not any(p.requires_grad for p in net.hidden.parameters())
    before = _snapshot(net)
    curves = layerwise.fine_tune(net, x, y, epochs=2, lr=0.5, batch_size=32, generator=gen(1),
                                 x_test=digits_flat[2], y_test=digits_flat[3])
    after = _snapshot(net)
    unchanged = [k for k in before if torch.equal(before[k], after[k])]
    assert not unchanged, f"fine-tuning left {unchanged} unchanged: it must backprop into all parameters"
    assert len(curves["loss"]) == 2 and len(curves["train_error"]) == len(curves["test_error"]) == 3


def test_error_rate_counts_wrong_argmax():
    class Fixed(nn.Module):
        def forward(self, x):
            return x
    logits = torch.tensor([[2.0, 1.0], [0.0, 3.0], [5.0, 4.0], [1.0, 2.0]])
    assert layerwise.error_rate(Fixed(), logits, torch.tensor([0, 1, 1, 0])) == pytest.approx(50.0)


def test_recipes_share_the_initial_weights_and_are_reproducible(digits_flat):
    x, y, xt, yt = (t[:150] for t in digits_flat)
    cfg = RecipeConfig(hidden=(10, 10), pretrain_epochs=0, finetune_epochs=0)
    nets = [layerwise.run_recipe(r, x, y, xt, yt, config=cfg, seed=5).net for r in (1, 2, 3)]
    for net in nets[1:]:
        for (k, a), b in zip(nets[0].state_dict().items(), net.state_dict().values()):
            assert torch.equal(a, b), k
    cfg = RecipeConfig(hidden=(10, 10), pretrain_epochs=1, finetune_epochs=2, batch_size=32)
    one, two = (layerwise.run_recipe(3, x, y, xt, yt, config=cfg, seed=1) for _ in range(2))
    assert one.curves == two.curves
    assert len(one.pretrain_curves) == 2 and len(one.autoencoders) == 2
    assert one.first_layer_pretrained.shape == (10, 64)
    with pytest.raises(ValueError, match="recipe"):
        layerwise.run_recipe(4, x, y, xt, yt, config=cfg, seed=0)


def test_run_recipe_logs_each_phase(digits_flat):
    x, y, xt, yt = (t[:100] for t in digits_flat)
    logged = []
    cfg = RecipeConfig(hidden=(8, 8), pretrain_epochs=2, finetune_epochs=3, batch_size=50)
    layerwise.run_recipe(2, x, y, xt, yt, config=cfg, seed=0, log=logged.append)
    assert sum("pretrain/level1_loss" in m for m in logged) == 2
    assert sum("pretrain/level2_loss" in m for m in logged) == 2
    assert [m["finetune/epoch"] for m in logged if "finetune/epoch" in m] == [1, 2, 3]


def test_summarize_mean_and_sample_std():
    fake = [layerwise.RecipeResult(1, s, None, {"train_error": [0.0], "test_error": [e]}) for s, e in enumerate((1.0, 2.0, 3.0))]
    mean, std, n = layerwise.summarize(fake)[1]
    assert (mean, n) == (2.0, 3) and std == pytest.approx(1.0)


# =========================================================================================================
# The masked LM loss and the sentence log-likelihood
# =========================================================================================================
@st.composite
def lm_batches(draw):
    B, T, V = draw(st.integers(1, 5)), draw(st.integers(1, 9)), draw(st.integers(2, 17))
    seed = draw(seeds)
    dtype = draw(float_dtypes)
    g = gen(seed)
    logits = (torch.randn(B, T, V, generator=g, dtype=torch.float64) * draw(st.sampled_from([1.0, 30.0]))).to(dtype)
    targets = torch.randint(0, V, (B, T), generator=g)
    pad = torch.rand(B, T, generator=g) < draw(st.sampled_from([0.0, 0.3, 0.7]))
    pad[0, 0] = False                                                       # at least one real token
    return logits, targets, pad


@given(batch=lm_batches())
def test_masked_lm_loss_matches_cross_entropy_with_ignore_index(batch):
    logits, targets, pad = batch
    V = logits.shape[-1]
    expected = F.cross_entropy(logits.reshape(-1, V), targets.masked_fill(pad, -100).reshape(-1), ignore_index=-100)
    got = masked_lm_loss(logits, targets, pad)
    assert got.shape == () and got.dtype == logits.dtype
    torch.testing.assert_close(got, expected, **TOL[logits.dtype])


@given(batch=lm_batches())
def test_sentence_log_likelihood_matches_per_sentence_cross_entropy(batch):
    logits, targets, pad = batch
    got = sentence_log_likelihood(logits, targets, pad)
    expected = torch.stack([
        -F.cross_entropy(logits[b][~pad[b]], targets[b][~pad[b]], reduction="sum") if (~pad[b]).any()
        else torch.zeros((), dtype=logits.dtype) for b in range(len(logits))])
    assert got.shape == (len(logits),) and got.dtype == logits.dtype
    torch.testing.assert_close(got, expected, **TOL[logits.dtype])
    # the batch loss is the negated total log-likelihood over the number of real tokens
    torch.testing.assert_close(masked_lm_loss(logits, targets, pad), -got.sum() / (~pad).sum(), **TOL[logits.dtype])


def test_padding_positions_do_not_matter():
    g = gen(7)
    logits = torch.randn(3, 6, 9, generator=g, dtype=torch.float64)
    targets = torch.randint(0, 9, (3, 6), generator=g)
    pad = torch.arange(6)[None, :] >= torch.tensor([6, 2, 4])[:, None]
    noisy_logits = torch.where(pad[..., None], torch.randn(3, 6, 9, generator=g, dtype=torch.float64) * 100, logits)
    noisy_targets = torch.where(pad, torch.randint(0, 9, (3, 6), generator=g), targets)
    for fn in (masked_lm_loss, sentence_log_likelihood):
        torch.testing.assert_close(fn(noisy_logits, noisy_targets, pad), fn(logits, targets, pad))


def test_lm_losses_reject_bad_arguments():
    logits, targets = torch.randn(2, 3, 4), torch.zeros(2, 3, dtype=torch.long)
    with pytest.raises(ValueError, match="expected logits"):
        masked_lm_loss(logits, targets[:, :2], torch.zeros(2, 2, dtype=torch.bool))
    with pytest.raises(TypeError, match="boolean"):
        sentence_log_likelihood(logits, targets, torch.zeros(2, 3))
    with pytest.raises(ValueError, match="padding"):
        masked_lm_loss(logits, targets, torch.ones(2, 3, dtype=torch.bool))


def test_losses_are_differentiable():
    g = gen(2)
    logits = torch.randn(2, 4, 5, generator=g, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, 5, (2, 4), generator=g)
    pad = torch.tensor([[False] * 4, [False, False, True, True]])
    assert torch.autograd.gradcheck(lambda z: masked_lm_loss(z, targets, pad), (logits,))
    assert torch.autograd.gradcheck(lambda z: sentence_log_likelihood(z, targets, pad), (logits,))


# =========================================================================================================
# Batches of sentences and the Transformer LM
# =========================================================================================================
def test_pad_batch_layout():
    inputs, targets, pad = lm.pad_batch([[10, 11, 12], [20]])
    assert inputs.tolist() == [[lm.BOS, 10, 11, 12], [lm.BOS, 20, lm.PAD, lm.PAD]]
    assert targets.tolist() == [[10, 11, 12, lm.EOS], [20, lm.EOS, lm.PAD, lm.PAD]]
    assert pad.tolist() == [[False] * 4, [False, False, True, True]]
    with pytest.raises(ValueError):
        lm.pad_batch([])


@pytest.fixture(scope="module")
def tiny_lm():
    torch.manual_seed(0)
    cfg = lm.LMConfig(vocab_size=23, d_model=16, n_heads=2, n_layers=2, d_ff=32, max_len=16)
    model = lm.TransformerLM(cfg).double()
    with torch.no_grad():                                  # not tiny initial weights: a stronger test
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return model


def _sentences(seed: int, n: int, V: int = 23, max_len: int = 12) -> list[list[int]]:
    g = gen(seed)
    return [torch.randint(4, V, (int(torch.randint(1, max_len, (1,), generator=g)),), generator=g).tolist()
            for _ in range(n)]


def test_lm_batch_equals_sentences_one_by_one(tiny_lm):
    """The LM loss masks padding: a padded batch gives the same numbers as its sentences one by one."""
    sents = _sentences(0, 6)
    inputs, targets, pad = lm.pad_batch(sents)
    with torch.no_grad():
        logits = tiny_lm(inputs)
        batch_loss = masked_lm_loss(logits, targets, pad)
        batch_ll = sentence_log_likelihood(logits, targets, pad)
        total, count = 0.0, 0
        for b, s in enumerate(sents):
            i, t, p = lm.pad_batch([s])
            alone = tiny_lm(i)
            n = len(s) + 1
            torch.testing.assert_close(logits[b, :n], alone[0], atol=1e-10, rtol=1e-10)   # real positions
            # oracle: PyTorch's cross-entropy on the sentence alone, no padding anywhere
            nll = F.cross_entropy(alone[0], t[0], reduction="sum")
            torch.testing.assert_close(batch_ll[b], -nll, atol=1e-10, rtol=1e-10)
            total, count = total + nll, count + n
    torch.testing.assert_close(batch_loss, total / count, atol=1e-10, rtol=1e-10)
    # whereas the unmasked mean over all B·T positions is a different number
    unmasked = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
    assert not torch.isclose(unmasked, batch_loss)


def test_lm_is_causal(tiny_lm):
    x = torch.tensor([[lm.BOS, 5, 6, 7, 8, 9]])
    y = x.clone()
    y[0, 4:] = torch.tensor([15, 16])
    with torch.no_grad():
        torch.testing.assert_close(tiny_lm(x)[0, :4], tiny_lm(y)[0, :4])
        assert not torch.allclose(tiny_lm(x)[0, 4:], tiny_lm(y)[0, 4:])


def _oracle_forward(model: lm.TransformerLM, inputs: torch.Tensor) -> torch.Tensor:
    """The same network written with PyTorch's own attention (F.scaled_dot_product_attention, is_causal)."""
    B, T = inputs.shape
    x = model.tok.weight[inputs] + model.pos.weight[:T]
    for blk in model.blocks:
        h = F.layer_norm(x, (x.shape[-1],), blk.ln1.weight, blk.ln1.bias, blk.ln1.eps)
        H, d = blk.n_heads, x.shape[-1] // blk.n_heads
        q, k, v = ((h @ W).view(B, T, H, d).transpose(1, 2) for W in (blk.W_q, blk.W_k, blk.W_v))
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, H * d)
        x = x + a @ blk.W_o
        h = F.layer_norm(x, (x.shape[-1],), blk.ln2.weight, blk.ln2.bias, blk.ln2.eps)
        x = x + blk.mlp[2](F.gelu(blk.mlp[0](h)))
    x = F.layer_norm(x, (x.shape[-1],), model.ln_f.weight, model.ln_f.bias, model.ln_f.eps)
    return x @ model.tok.weight.T


def test_lm_matches_an_oracle_with_pytorch_attention(tiny_lm):
    inputs, _, _ = lm.pad_batch(_sentences(3, 4))
    with torch.no_grad():
        torch.testing.assert_close(tiny_lm(inputs), _oracle_forward(tiny_lm, inputs), atol=1e-10, rtol=1e-10)


def test_lm_uses_the_course_attention():
    assert lm.multi_head_attention is core.multi_head_attention
    assert lm.causal_mask is core.causal_mask
    calls = []
    original = lm.multi_head_attention
    try:
        lm.multi_head_attention = lambda *a, **k: calls.append(1) or original(*a, **k)
        model = lm.TransformerLM(lm.LMConfig(vocab_size=10, d_model=8, n_heads=2, n_layers=3, d_ff=16))
        model(torch.tensor([[1, 4, 5]]))
    finally:
        lm.multi_head_attention = original
    assert len(calls) == 3


def test_lm_rejects_too_long_input():
    model = lm.TransformerLM(lm.LMConfig(vocab_size=10, d_model=8, n_heads=2, n_layers=1, d_ff=16, max_len=4))
    with pytest.raises(ValueError, match="max_len"):
        model(torch.ones(1, 5, dtype=torch.long))


def test_classifier_pools_real_positions_only(tiny_lm):
    torch.manual_seed(1)
    clf = lm.SentenceClassifier(copy.deepcopy(tiny_lm), n_classes=3).double()
    sents = _sentences(4, 5)
    inputs, _, pad = lm.pad_batch(sents)
    with torch.no_grad():
        together = clf(inputs, pad)
        for b, s in enumerate(sents):
            i, _, p = lm.pad_batch([s])
            torch.testing.assert_close(together[b], clf(i, p)[0], atol=1e-10, rtol=1e-10)
            h = tiny_lm.hidden(i)[0]                                  # (n + 1, d): <bos> w_1..w_n
            torch.testing.assert_close(clf(i, p)[0], clf.head(h.mean(0)), atol=1e-10, rtol=1e-10)


# =========================================================================================================
# Text, split, the labelled task
# =========================================================================================================
@pytest.fixture(scope="module")
def split():
    return lm.pydoc_sentences()


def test_pydoc_split_is_disjoint_deterministic_and_sentence_like(split):
    assert len(split.train) > 1000 and len(split.test) > 250
    assert not set(split.train) & set(split.test), "a sentence is both a pre-training and a test sentence"
    assert len(set(split.train)) == len(split.train) and len(set(split.test)) == len(split.test)
    again = lm.pydoc_sentences()
    assert again.train == split.train and again.test == split.test
    assert lm.pydoc_sentences(seed=1).test != split.test
    for s in split.train[:200] + split.test[:50]:
        assert s[0].isupper() or s[0] in '"(*', s
        assert s.endswith((".", "!", "?")) and ">>>" not in s and "::=" not in s, s
        assert 5 <= len(lm.tokenize(s)) <= 48


def test_split_sentences_drops_code_and_headings():
    text = ("The title\n*********\n\nFirst sentence of the prose here. Second one is also prose.\n\n"
            "   >>> print('code')\n   code\n\n   rule ::= \"a\" | \"b\"\n\nNew in version 3.5.\n")
    assert lm.split_sentences(text) == ["First sentence of the prose here.", "Second one is also prose."]


def test_vocab_from_training_sentences_only():
    v = lm.Vocab(["The cat sat.", "The dog sat."], min_count=2)
    assert v.itos[:4] == ["<pad>", "<bos>", "<eos>", "<unk>"]
    assert v.encode("The cat sat.") == [v.stoi["the"], lm.UNK, v.stoi["sat"], v.stoi["."]]
    assert v.decode(v.encode("the sat .")) == "the sat ."


def test_shuffle_words_keeps_the_words_and_the_last_token():
    g = gen(0)
    s = [5, 6, 7, 8, 9, 2]
    for _ in range(20):
        t = lm.shuffle_words(s, g)
        assert sorted(t) == sorted(s) and t[-1] == s[-1] and t != s
    assert lm.shuffle_words([4, 4, 4, 9], g) == [4, 4, 4, 9]        # no other order exists


def test_word_order_task_is_balanced():
    sents = _sentences(5, 10)
    sents = [s + [30] for s in sents if len(set(s)) > 1]
    x, y = lm.word_order_task(sents, gen(0))
    assert sum(y) == len(sents) - len(sents) // 2
    for s, ex, label in zip(sents, x, y):
        assert (ex == s) == (label == 1)
    x2, y2 = lm.word_order_task(sents, gen(0), both=True)
    assert y2 == [1] * len(sents) + [0] * len(sents) and x2[:len(sents)] == sents


def test_length_batches_partition_the_indices():
    sents = _sentences(6, 37)
    batches = lm.length_batches(sents, 8, gen(0))
    assert sorted(i for b in batches for i in b) == list(range(37))
    assert all(len(b) <= 8 for b in batches)
    for b in batches:                                     # similar lengths within a batch
        lengths = sorted(len(sents[i]) for i in b)
        assert lengths == sorted(lengths)


# =========================================================================================================
# Pre-training and fine-tuning loops
# =========================================================================================================
def test_pretraining_lowers_the_loss_and_logs():
    sents = _sentences(8, 40, V=15, max_len=8)
    torch.manual_seed(0)
    model = lm.TransformerLM(lm.LMConfig(vocab_size=15, d_model=16, n_heads=2, n_layers=1, d_ff=32, max_len=16))
    before = lm.evaluate_lm(model, sents)
    logged = []
    curves = lm.pretrain_lm(model, sents, steps=40, batch_size=8, lr=1e-2, generator=gen(0), held_out=sents[:10],
                            eval_every=20, log=logged.append)
    assert len(curves["loss"]) == 40 and curves["eval_step"] == [20, 40]
    assert lm.evaluate_lm(model, sents) < before - 0.3
    assert sum("pretrain/held_out_loss" in m for m in logged) == 2


def test_classifier_fine_tuning_updates_every_parameter(tiny_lm):
    torch.manual_seed(0)
    clf = lm.SentenceClassifier(copy.deepcopy(tiny_lm).float(), n_classes=2)
    before = {k: v.clone() for k, v in clf.state_dict().items()}
    sents = _sentences(9, 12)
    x, y = lm.word_order_task([s + [3] for s in sents], gen(1))
    losses = lm.fine_tune_classifier(clf, x, y, steps=3, batch_size=4, lr=1e-3, generator=gen(2))
    assert len(losses) == 3
    unchanged = [k for k, v in clf.state_dict().items() if torch.equal(v, before[k])]
    assert not unchanged, f"fine-tuning left {unchanged} unchanged"
    # and not only through weight decay: the cross-entropy's gradient reaches every parameter, body included
    no_grad = [k for k, p in clf.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not no_grad, f"no gradient reached {no_grad}"
    assert 0.0 <= lm.accuracy(clf, x, y) <= 100.0


def test_prefers_real_counts_pairs():
    class NextIsPlusOne(nn.Module):
        """Predicts token t + 1 after token t, with confidence."""
        def __init__(self):
            super().__init__()
            self.dummy = nn.Parameter(torch.zeros(()))

        def forward(self, inputs):
            return F.one_hot((inputs + 1).clamp(max=19), 20).double() * 10

    model = NextIsPlusOne()
    assert lm.prefers_real(model, [[5, 6, 7, 8]], [[6, 5, 7, 8]]) == 100.0
    assert lm.prefers_real(model, [[6, 5, 7, 8], [5, 6, 7, 8]], [[5, 6, 7, 8], [5, 6, 7, 8]]) == 25.0
    with pytest.raises(ValueError, match="pairs"):
        lm.prefers_real(model, [[5, 6]], [])


# =========================================================================================================
# Grading: the references pass, plausible mistakes fail
# =========================================================================================================
EXERCISES = {"reconstruction_loss": autoencoder.reconstruction_loss, "encode_stack": layerwise.encode_stack,
             "masked_lm_loss": lm.masked_lm_loss, "sentence_log_likelihood": lm.sentence_log_likelihood}


@pytest.mark.parametrize("name", EXERCISES)
def test_references_pass_grading(name, capsys):
    assert grading.exercises()[name].reference is EXERCISES[name]
    grading.check(name, EXERCISES[name], device=["cpu"])
    assert "cases passed" in capsys.readouterr().out


def _no_last_sigmoid(x, weights, biases):
    h = x
    for l, (W, b) in enumerate(zip(weights, biases)):
        h = h @ W.T + b
        if l < len(weights) - 1:
            h = torch.sigmoid(h)
    return h


def _transposed(x, weights, biases):
    h = x
    for W, b in zip(weights, biases):
        h = torch.sigmoid(h @ W + b) if W.shape[0] == W.shape[1] else torch.sigmoid(h @ W.T + b)
    return h


def _mean_over_all_positions(logits, targets, pad_mask):
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


def _mean_of_sentence_means(logits, targets, pad_mask):
    ll = lm.sentence_log_likelihood(logits, targets, pad_mask)
    return -(ll / (~pad_mask).sum(-1)).mean()


def _log_of_softmax(logits, targets, pad_mask):
    p = torch.softmax(logits, -1).gather(-1, targets.masked_fill(pad_mask, 0)[..., None]).squeeze(-1)
    return -torch.log(p).masked_fill(pad_mask, 0).sum() / (~pad_mask).sum()


def _mean_not_sum(logits, targets, pad_mask):
    return lm.sentence_log_likelihood(logits, targets, pad_mask) / (~pad_mask).sum(-1).clamp(min=1)


def _padding_counted(logits, targets, pad_mask):
    return torch.log_softmax(logits, -1).gather(-1, targets[..., None]).squeeze(-1).sum(-1)


@pytest.mark.parametrize("name, wrong", [
    ("reconstruction_loss", lambda x, x_hat: F.mse_loss(x_hat, x)),
    ("reconstruction_loss", lambda x, x_hat: ((x - x_hat) ** 2).sum()),
    ("reconstruction_loss", lambda x, x_hat: ((x - x_hat) ** 2).sum(1).mean().float()),
    ("encode_stack", _no_last_sigmoid),
    ("encode_stack", _transposed),
    ("encode_stack", lambda x, weights, biases: torch.relu(layerwise.encode_stack(x, weights, biases))
     if weights else torch.zeros_like(x)),
    ("masked_lm_loss", _mean_over_all_positions),
    ("masked_lm_loss", _mean_of_sentence_means),
    ("masked_lm_loss", _log_of_softmax),
    ("sentence_log_likelihood", _mean_not_sum),
    ("sentence_log_likelihood", _padding_counted),
], ids=["mse-mean", "sum-not-mean", "float32", "no-last-sigmoid", "W-not-transposed", "relu-no-level",
        "all-positions", "mean-of-means", "log-softmax-underflow", "mean-not-sum", "padding-counted"])
def test_plausible_mistakes_fail_grading(name, wrong):
    with pytest.raises(AssertionError, match=name):
        grading.check(name, wrong, device=["cpu"])


def _cross_entropy_shortcut(logits, targets, pad_mask):
    V = logits.shape[-1]
    return F.cross_entropy(logits.reshape(-1, V), targets.masked_fill(pad_mask, -100).reshape(-1), ignore_index=-100)


def _nll_shortcut(logits, targets, pad_mask):
    log_p = torch.log_softmax(logits, -1)
    return torch.stack([-F.nll_loss(log_p[b], targets[b].masked_fill(pad_mask[b], -100), reduction="sum")
                        for b in range(len(logits))])


@pytest.mark.parametrize("name, shortcut", [("masked_lm_loss", _cross_entropy_shortcut),
                                            ("sentence_log_likelihood", _nll_shortcut)])
def test_pytorch_loss_shortcuts_are_refused(name, shortcut):
    """Right values through F.cross_entropy / F.nll_loss: the exercise is to compute them oneself."""
    with pytest.raises(AssertionError, match=rf"{name}.*uses .*(cross_entropy|nll_loss)"):
        grading.check(name, shortcut, device=["cpu"])
