"""The capstone's model (course_lib.models) against independent oracles, never against itself.

Oracles written out here: ``torch.nn.RMSNorm`` / ``F.rms_norm`` (torch >= 2.4; a hand formula otherwise),
``F.layer_norm``, Llama's ``FeedForward`` (``w2(F.silu(w1(x)) * w3(x))``), Hugging Face's Mixtral router
(softmax over all experts, top-k, renormalise), a dense mixture (every expert on every token, weighted by
a scattered gate matrix), ``F.scaled_dot_product_attention`` with Meta's complex-number RoPE and explicit
masks, a whole forward pass written with those built-ins from the model's parameters, ``gradcheck`` and the
analytic gradient 2·log Z·softmax of the z-loss, and AdamW's decoupled decay seen on zero gradients.
"""
from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from course_lib import grading
from course_lib.attention.sliding_window import RollingBufferCache
from course_lib.models import model as M
from course_lib.models import train as TR

pytestmark = pytest.mark.attention

HAS_TORCH_RMSNORM = hasattr(torch.nn, "RMSNorm")        # torch >= 2.4


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models: one thread is as fast, and immune to other jobs on a shared machine (with two busy cores,
    two OpenMP threads waiting for each other made these tests ten times slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def randn(seed: int, *shape: int, dtype=torch.float64) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(dtype)


def tiny(**kw) -> M.GPTConfig:
    base = dict(vocab_size=23, block_size=32, n_layer=2, d_model=16, n_head=4)
    return M.GPTConfig(**{**base, **kw})


def build(config: M.GPTConfig, seed: int = 0, **fns) -> M.GPT:
    torch.manual_seed(seed)
    model = M.GPT(config, **fns).double()
    with torch.no_grad():                      # non-trivial norm gains and biases, so that mistakes show
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.add_(0.3 * randn(len(name), *p.shape))
    return model.eval()


# ---------------------------------------------------------------------------------------------------------
# RMSNorm
# ---------------------------------------------------------------------------------------------------------
def rms_oracle(x, weight, eps):
    if HAS_TORCH_RMSNORM:
        norm = torch.nn.RMSNorm(x.shape[-1], eps=eps, dtype=x.dtype)
        with torch.no_grad():
            norm.weight.copy_(weight)
        return norm(x).detach()
    return x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps) * weight


@given(seed=st.integers(0, 2**30), d=st.integers(1, 40), eps=st.sampled_from([1e-6, 1e-5, 0.1, 1.0]))
def test_rms_norm_matches_torch(seed, d, eps):
    x, w = randn(seed, 3, 5, d), randn(seed + 1, d)
    torch.testing.assert_close(M.rms_norm(x, w, eps), rms_oracle(x, w, eps), rtol=1e-10, atol=1e-12)


@pytest.mark.skipif(not HAS_TORCH_RMSNORM, reason="torch.nn.RMSNorm needs torch >= 2.4")
def test_rmsnorm_module_matches_torch_module():
    ours, theirs = M.RMSNorm(24, eps=1e-5), torch.nn.RMSNorm(24, eps=1e-5)
    with torch.no_grad():
        ours.weight.copy_(randn(1, 24))
        theirs.weight.copy_(ours.weight)
    x = randn(2, 4, 7, 24, dtype=torch.float32)
    torch.testing.assert_close(ours(x), theirs(x), rtol=1e-5, atol=1e-6)


@given(seed=st.integers(0, 2**30), c=st.floats(1e-3, 1e3))
def test_rms_norm_is_scale_invariant_and_keeps_dtype(seed, c):
    x, w = randn(seed, 4, 16), randn(seed + 1, 16)
    torch.testing.assert_close(M.rms_norm(c * x, w, 0.0), M.rms_norm(x, w, 0.0), rtol=1e-9, atol=1e-9)
    y = M.rms_norm(x.to(torch.bfloat16), w.to(torch.bfloat16))
    assert y.dtype == torch.bfloat16
    out = M.rms_norm(torch.zeros(2, 8), torch.ones(8))
    assert torch.equal(out, torch.zeros(2, 8)), "a zero vector stays zero (ε keeps the division finite)"


# ---------------------------------------------------------------------------------------------------------
# SwiGLU and the ReLU/GELU MLP
# ---------------------------------------------------------------------------------------------------------
class LlamaFeedForward(torch.nn.Module):
    """Meta Llama's FeedForward: w2(F.silu(w1(x)) * w3(x)), nn.Linear without bias (weights (out, in))."""

    def __init__(self, dim, hidden):
        super().__init__()
        self.w1 = torch.nn.Linear(dim, hidden, bias=False)
        self.w2 = torch.nn.Linear(hidden, dim, bias=False)
        self.w3 = torch.nn.Linear(dim, hidden, bias=False)

    def forward(self, x):
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


@given(seed=st.integers(0, 2**30), C=st.integers(1, 12), Fh=st.integers(1, 20))
def test_swiglu_matches_llama_feedforward(seed, C, Fh):
    ff = LlamaFeedForward(C, Fh).double()
    x = randn(seed, 2, 3, C)
    got = M.swiglu(x, ff.w1.weight.T, ff.w3.weight.T, ff.w2.weight.T)
    torch.testing.assert_close(got, ff(x).detach(), rtol=1e-10, atol=1e-12)
    # by hand, element by element: Swish(z) = z σ(z) on the gate only
    g, u = x @ ff.w1.weight.T, x @ ff.w3.weight.T
    torch.testing.assert_close(got, (g / (1 + torch.exp(-g)) * u) @ ff.w2.weight.T, rtol=1e-10, atol=1e-12)


def test_swiglu_width_matches_the_parameters_of_a_4d_mlp():
    for C in (64, 96, 128, 4096):
        F_ = M.swiglu_width(C)
        assert F_ % 8 == 0 and abs(3 * C * F_ - 2 * C * 4 * C) <= 3 * C * 8
    assert M.swiglu_width(4096, multiple=256) == 11008          # Llama-7B's hidden size


@pytest.mark.parametrize("act", ["relu", "gelu"])
def test_mlp_matches_sequential(act):
    mlp = M.MLP(8, 32, act, bias=True).double()
    seq = torch.nn.Sequential(mlp.fc, torch.nn.ReLU() if act == "relu" else torch.nn.GELU(), mlp.proj)
    x = randn(3, 2, 5, 8)
    manual = F.linear(x, mlp.fc.weight, mlp.fc.bias)
    manual = torch.relu(manual) if act == "relu" else 0.5 * manual * (1 + torch.erf(manual / math.sqrt(2)))
    manual = F.linear(manual, mlp.proj.weight, mlp.proj.bias)
    torch.testing.assert_close(mlp(x), seq(x))
    torch.testing.assert_close(mlp(x), manual)


# ---------------------------------------------------------------------------------------------------------
# z-loss
# ---------------------------------------------------------------------------------------------------------
def test_z_loss_value_and_gradcheck():
    logits = randn(4, 3, 5, 11).requires_grad_(True)
    log_z = torch.log(torch.exp(logits.detach()).sum(-1))                     # naive is fine at this scale
    torch.testing.assert_close(TR.z_loss(logits.detach()), (log_z ** 2).mean())
    assert torch.autograd.gradcheck(TR.z_loss, (logits,))
    assert torch.autograd.gradgradcheck(TR.z_loss, (logits,))
    TR.z_loss(logits).backward()
    expected = 2 * log_z[..., None] * torch.softmax(logits.detach(), -1) / (3 * 5)   # d/dz (log Z)² / N
    torch.testing.assert_close(logits.grad, expected)


def test_z_loss_is_stable_and_in_float32_at_least():
    big = torch.tensor([[1000.0, 999.0, -5.0]])                              # exp overflows in float32
    expected = (1000 + math.log(1 + math.exp(-1) + math.exp(-1005))) ** 2
    assert math.isclose(TR.z_loss(big).item(), expected, rel_tol=1e-6)
    assert TR.z_loss(big.to(torch.bfloat16)).dtype == torch.float32
    assert TR.z_loss(big.double()).dtype == torch.float64
    assert TR.z_loss(torch.zeros(3, 1)).item() == 0.0                       # one class: Z = e⁰ = 1
    with pytest.raises(ValueError):
        TR.z_loss(torch.zeros(3, 0))


def test_z_loss_pulls_log_z_towards_zero_in_training():
    data = TR.char_data(text="the quick brown fox jumps over the lazy dog. " * 40)
    out = {}
    for c in (0.0, 1.0):
        torch.manual_seed(0)
        model = M.GPT(tiny(vocab_size=data.tokenizer.vocab_size, block_size=16))
        cfg = TR.TrainConfig(steps=25, batch_size=8, block_size=16, lr=1e-2, warmup=2, z_loss=c, eval_every=25,
                             eval_windows=4)
        out[c] = TR.train_lm(model, data.train, data.val, cfg, progress=False)["log_z"][-1]
    assert out[1.0] < 0.6 * out[0.0], out               # measured: 1.93 against 3.59 (log V = 3.3 at init)


# ---------------------------------------------------------------------------------------------------------
# Mixture of experts
# ---------------------------------------------------------------------------------------------------------
def hf_mixtral_router(logits, k):
    """transformers' MixtralSparseMoeBlock: softmax over all experts, top-k, renormalise."""
    p = torch.softmax(logits, dim=-1, dtype=logits.dtype)
    w, idx = torch.topk(p, k, dim=-1)
    return w / w.sum(-1, keepdim=True), idx


@given(seed=st.integers(0, 2**30), E=st.integers(1, 9), data=st.data())
def test_topk_routing_matches_hf_mixtral(seed, E, data):
    k = data.draw(st.integers(1, E))
    logits = randn(seed, 7, E)
    w, idx = M.topk_routing(logits, k)
    w_hf, idx_hf = hf_mixtral_router(logits, k)
    assert torch.equal(idx, idx_hf) and idx.dtype == torch.int64
    torch.testing.assert_close(w, w_hf, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(w.sum(-1), torch.ones(7, dtype=torch.float64))
    chosen = logits.gather(-1, idx)
    assert bool((chosen[:, :-1] >= chosen[:, 1:]).all()), "indices by decreasing logit"
    assert bool((chosen[:, -1:] >= logits.masked_fill(torch.zeros_like(logits, dtype=torch.bool).scatter(-1, idx, True),
                                                       -math.inf)).all()), "the k largest logits"


def test_topk_routing_errors_and_dtype():
    with pytest.raises(ValueError):
        M.topk_routing(torch.zeros(3, 4), 5)
    w, idx = M.topk_routing(torch.randn(5, 8).to(torch.bfloat16), 2)
    assert w.dtype == torch.bfloat16 and idx.dtype == torch.int64


def test_moe_matches_dense_mixture_of_every_expert():
    torch.manual_seed(0)
    moe = M.MoE(8, 12, n_experts=5, k=2).double()
    for p in moe.parameters():
        torch.nn.init.normal_(p, 0, 0.5)
    x = randn(1, 3, 4, 8)
    xf = x.reshape(-1, 8)
    logits = xf @ moe.W_g
    w, idx = hf_mixtral_router(logits, 2)
    gate = torch.zeros_like(logits).scatter(-1, idx, w)                     # (N, E): 0 for experts not chosen
    ff = [LlamaFeedForward(8, 12).double() for _ in range(5)]
    dense = torch.zeros_like(xf)
    for e, f in enumerate(ff):
        with torch.no_grad():
            f.w1.weight.copy_(moe.W_gate[e].T)
            f.w3.weight.copy_(moe.W_up[e].T)
            f.w2.weight.copy_(moe.W_down[e].T)
        dense = dense + gate[:, e:e + 1] * f(xf)
    torch.testing.assert_close(moe(x), dense.detach().view(3, 4, 8), rtol=1e-10, atol=1e-12)
    assert math.isclose(moe.load.sum().item(), 1.0) and moe.aux_loss.item() > 0


def test_moe_with_one_expert_is_swiglu():
    moe = M.MoE(6, 10, n_experts=1, k=1).double()
    for p in moe.parameters():
        torch.nn.init.normal_(p, 0, 0.5)
    x = randn(2, 2, 3, 6)
    torch.testing.assert_close(moe(x), M.swiglu(x, moe.W_gate[0], moe.W_up[0], moe.W_down[0]))
    assert math.isclose(moe.aux_loss.item(), 1.0)                           # E · f · P = 1 · 1 · 1


# ---------------------------------------------------------------------------------------------------------
# Attention: against F.scaled_dot_product_attention with Meta's complex-number RoPE
# ---------------------------------------------------------------------------------------------------------
def meta_rope(x, positions, base=10000.0):
    """Llama's apply_rotary_emb on adjacent pairs, for x (B, h, T, d)."""
    d = x.shape[-1]
    freqs = 1.0 / (base ** (torch.arange(0, d, 2, dtype=torch.float64) / d))
    angles = torch.outer(positions.double(), freqs)                         # (T, d/2)
    rot = torch.polar(torch.ones_like(angles), angles)
    xc = torch.view_as_complex(x.double().reshape(*x.shape[:-1], d // 2, 2))
    return torch.view_as_real(xc * rot).reshape(x.shape).to(x.dtype)


def allowed(T, S, window):
    """Boolean (T, S): query t (absolute position t + S − T) may see key j."""
    p = torch.arange(T)[:, None] + S - T
    j = torch.arange(S)[None, :]
    ok = j <= p
    return ok if window is None else ok & (j >= p - window // 2)


def sdpa_attention(layer: M.CausalSelfAttention, x, positions, window, rope: bool):
    B, T, C = x.shape
    hq, hkv, d = layer.h_q, layer.h_kv, layer.d_head
    q = (x @ layer.W_q).view(B, T, hq, d).transpose(1, 2)
    k = (x @ layer.W_k).view(B, T, hkv, d).transpose(1, 2)
    v = (x @ layer.W_v).view(B, T, hkv, d).transpose(1, 2)
    if rope:
        q, k = meta_rope(q, positions), meta_rope(k, positions)
    k, v = k.repeat_interleave(hq // hkv, dim=1), v.repeat_interleave(hq // hkv, dim=1)   # HF's repeat_kv
    y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed(T, T, window))
    return y.transpose(1, 2).reshape(B, T, hq * d) @ layer.W_o


@pytest.mark.parametrize("n_kv_head", [4, 2, 1], ids=["MHA", "GQA", "MQA"])
@pytest.mark.parametrize("window", [None, 2, 6])
@pytest.mark.parametrize("positions", ["rope", "learned"])
def test_attention_layer_matches_sdpa(n_kv_head, window, positions):
    config = tiny(n_kv_head=n_kv_head, window=window, positions=positions)
    torch.manual_seed(0)
    layer = M.CausalSelfAttention(config, 0).double()
    x, pos = randn(5, 2, 9, 16), torch.arange(9)
    torch.testing.assert_close(layer(x, pos), sdpa_attention(layer, x, pos, window, positions == "rope").detach())


def test_attention_parameters_and_cache_bytes_of_mha_gqa_mqa():
    C, L, T = 16, 2, 10
    for h_kv in (4, 2, 1):
        model = M.GPT(tiny(n_kv_head=h_kv))
        attn = sum(p.numel() for b in model.blocks for p in b.attn.parameters())
        assert attn == L * (2 * C * C + 2 * C * h_kv * (C // 4))             # W_q, W_o full; W_k, W_v h_kv heads
        cache = model.new_cache(1, T)
        assert cache.k.nbytes + cache.v.nbytes == 2 * L * h_kv * (C // 4) * T * 4  # float32


# ---------------------------------------------------------------------------------------------------------
# The whole model against a forward pass written with torch built-ins
# ---------------------------------------------------------------------------------------------------------
def oracle_forward(model: M.GPT, idx):
    c = model.config
    P = dict(model.named_parameters())
    T = idx.shape[1]
    pos = torch.arange(T)
    x = F.embedding(idx, P["tok_emb.weight"])
    if c.positions == "learned":
        x = x + P["pos_emb.weight"][:T]

    def norm(h, prefix):
        if c.norm == "layernorm":
            return F.layer_norm(h, (c.d_model,), P[prefix + ".weight"], P[prefix + ".bias"], c.norm_eps)
        if hasattr(F, "rms_norm"):
            return F.rms_norm(h, (c.d_model,), P[prefix + ".weight"], c.norm_eps)
        return h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + c.norm_eps) * P[prefix + ".weight"]

    def mlp(h, prefix):
        if c.mlp in ("relu", "gelu"):
            a = F.linear(h, P[prefix + ".fc.weight"], P.get(prefix + ".fc.bias"))
            a = F.relu(a) if c.mlp == "relu" else F.gelu(a)
            return F.linear(a, P[prefix + ".proj.weight"], P.get(prefix + ".proj.bias"))
        if c.mlp == "swiglu":
            return (F.silu(h @ P[prefix + ".W_gate"]) * (h @ P[prefix + ".W_up"])) @ P[prefix + ".W_down"]
        flat = h.reshape(-1, c.d_model)
        w, idx_e = hf_mixtral_router(flat @ P[prefix + ".W_g"], c.top_k)
        gate = torch.zeros(flat.shape[0], c.n_experts, dtype=h.dtype).scatter(-1, idx_e, w)
        out = sum(gate[:, e:e + 1] * ((F.silu(flat @ P[prefix + ".W_gate"][e]) * (flat @ P[prefix + ".W_up"][e]))
                                      @ P[prefix + ".W_down"][e]) for e in range(c.n_experts))
        return out.view_as(h)

    for i, block in enumerate(model.blocks):
        pre = f"blocks.{i}"
        attn = lambda h: sdpa_attention(block.attn, h, pos, c.window, c.positions == "rope")   # noqa: E731
        if c.norm_position == "pre":
            x = x + attn(norm(x, pre + ".norm1"))
            x = x + mlp(norm(x, pre + ".norm2"), pre + ".mlp")
        else:
            x = norm(x + attn(x), pre + ".norm1")
            x = norm(x + mlp(x, pre + ".mlp"), pre + ".norm2")
    if c.norm_position == "pre":
        x = norm(x, "norm_f")
    head = P["tok_emb.weight"] if c.tie_embeddings else P["lm_head.weight"]
    return x @ head.T


CONFIGS = {
    "gpt2": dict(norm="layernorm", norm_position="pre", mlp="gelu", positions="learned", bias=True),
    "original-post-ln-relu": dict(norm="layernorm", norm_position="post", mlp="relu", positions="learned", bias=True),
    "modern": dict(norm="rmsnorm", mlp="swiglu", positions="rope", n_kv_head=2),
    "modern-mqa-window": dict(norm="rmsnorm", mlp="swiglu", positions="rope", n_kv_head=1, window=4),
    "rmsnorm-post-gelu-untied": dict(norm="rmsnorm", norm_position="post", mlp="gelu", tie_embeddings=False),
    "mixtral": dict(mlp="moe", n_experts=4, top_k=2, n_kv_head=2, window=6, d_ff=8),
}


@pytest.mark.parametrize("name", CONFIGS)
def test_model_matches_an_oracle_written_with_builtins(name):
    model = build(tiny(**CONFIGS[name]))
    idx = torch.randint(0, 23, (2, 11), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model(idx), oracle_forward(model, idx), rtol=1e-9, atol=1e-10)


def test_model_uses_the_functions_it_is_given():
    calls = {"rms_norm": 0, "swiglu": 0, "routing": 0}

    def counted(name, fn):
        def wrapper(*a, **k):
            calls[name] += 1
            return fn(*a, **k)
        return wrapper
    model = M.GPT(tiny(mlp="moe"), rms_norm=counted("rms_norm", M.rms_norm), swiglu=counted("swiglu", M.swiglu),
                  routing=counted("routing", M.topk_routing))
    model(torch.zeros(1, 5, dtype=torch.long))
    assert calls["rms_norm"] == 2 * 2 + 1 and calls["routing"] == 2 and calls["swiglu"] >= 2, calls


def test_presets_and_config_errors():
    g, m = M.gpt2_config(), M.modern_config()
    assert (g.norm, g.mlp, g.positions, g.n_kv_head) == ("layernorm", "gelu", "learned", g.n_head)
    assert (m.norm, m.mlp, m.positions, m.n_kv_head) == ("rmsnorm", "swiglu", "rope", m.n_head // 2)
    assert g.d_ff == 4 * g.d_model and m.d_ff == M.swiglu_width(m.d_model)
    for bad in (dict(norm="batchnorm"), dict(mlp="tanh"), dict(positions="alibi"), dict(window=3), dict(d_model=30),
                dict(n_layer=0), dict(mlp="moe", top_k=5, n_experts=4), dict(norm_position="middle")):
        with pytest.raises(ValueError):
            tiny(**bad)
    with pytest.raises(ValueError):
        M.GPT(tiny(n_kv_head=3))                                            # 4 query heads in 3 groups


# ---------------------------------------------------------------------------------------------------------
# Tied embeddings
# ---------------------------------------------------------------------------------------------------------
def test_tied_embeddings_share_storage():
    tied, untied = M.GPT(tiny(tie_embeddings=True)), M.GPT(tiny(tie_embeddings=False))
    assert tied.lm_head.weight is tied.tok_emb.weight
    assert tied.lm_head.weight.untyped_storage().data_ptr() == tied.tok_emb.weight.untyped_storage().data_ptr()
    assert untied.lm_head.weight.data_ptr() != untied.tok_emb.weight.data_ptr()
    assert untied.num_params() - tied.num_params() == 23 * 16
    assert tied.num_params() == sum(p.numel() for p in {id(p): p for _, p in tied.named_parameters(remove_duplicate=False)}.values())
    with torch.no_grad():
        tied.tok_emb.weight[3, 0] = 7.0                                     # one write, seen by both uses
    assert tied.lm_head.weight[3, 0].item() == 7.0
    idx = torch.tensor([[1, 2, 3]])
    F.cross_entropy(tied(idx).view(-1, 23), torch.tensor([2, 3, 4])).backward()
    grad = tied.tok_emb.weight.grad
    assert grad is not None and grad[5].abs().sum() > 0                     # row 5: output layer only
    assert grad[1].abs().sum() > 0                                           # row 1: input embedding (and output)


# ---------------------------------------------------------------------------------------------------------
# Generation: the caches
# ---------------------------------------------------------------------------------------------------------
def stepwise_logits(model, prompt, tokens, kind):
    """Logits of each position, fed to the cache as the prompt then one token at a time."""
    cache = model.new_cache(prompt.shape[0], prompt.shape[1] + tokens.shape[1], kind)
    out = [model(prompt, cache)]
    for t in range(tokens.shape[1]):
        out.append(model(tokens[:, t:t + 1], cache))
    return torch.cat(out, dim=1)


@pytest.mark.parametrize("name,kind", [("modern", "kv"), ("gpt2", "kv"), ("modern-mqa-window", "kv"),
                                       ("modern-mqa-window", "rolling"), ("mixtral", "rolling"),
                                       ("original-post-ln-relu", "kv")])
def test_cached_logits_equal_full_recomputation(name, kind):
    model = build(tiny(**CONFIGS[name]))
    g = torch.Generator().manual_seed(1)
    prompt, more = torch.randint(0, 23, (2, 5), generator=g), torch.randint(0, 23, (2, 20), generator=g)
    with torch.no_grad():
        full = model(torch.cat((prompt, more), dim=1))
        torch.testing.assert_close(stepwise_logits(model, prompt, more, kind), full, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("name", ["modern", "modern-mqa-window", "gpt2"])
def test_cached_generation_equals_uncached(name):
    model = build(tiny(**CONFIGS[name]))
    prompt = torch.randint(0, 23, (3, 4), generator=torch.Generator().manual_seed(2))
    n = 24
    for kw in (dict(temperature=0), dict(temperature=0.8, top_k=5), dict(temperature=1.5)):
        a = model.generate(prompt, n, use_cache=True, generator=torch.Generator().manual_seed(3), **kw)
        b = model.generate(prompt, n, use_cache=False, generator=torch.Generator().manual_seed(3), **kw)
        assert a.shape == (3, 4 + n) and torch.equal(a[:, :4], prompt)
        assert torch.equal(a, b), kw


def test_rolling_buffer_keeps_w_slots_and_runs_past_block_size():
    model = build(tiny(**CONFIGS["modern-mqa-window"], block_size=8))
    cache = model.new_cache(1, 1000, "rolling")
    W = 4 // 2 + 1
    assert cache.k.shape == (2, 1, 1, W, 4) and cache.nbytes == 2 * 2 * 1 * W * 4 * 8   # float64, any length
    out = model.generate(torch.zeros(1, 3, dtype=torch.long), 40, temperature=0)       # 43 > block_size = 8
    ref = model.generate(torch.zeros(1, 3, dtype=torch.long), 40, temperature=0, use_cache=False)
    assert torch.equal(out, ref)
    with pytest.raises(ValueError):
        model.new_cache(1, 10, "paged")
    with pytest.raises(ValueError):
        M.GPT(tiny()).new_cache(1, 10, "rolling")                                        # no window
    cache = model.new_cache(1, 10, "rolling")
    model(torch.zeros(1, 3, dtype=torch.long), cache)
    with pytest.raises(ValueError):
        model(torch.zeros(1, 2, dtype=torch.long), cache)                               # one token at a time


def test_rolling_cache_agrees_with_the_course_rolling_buffer():
    """With h_kv = h_q, one layer's outputs equal sliding_window.RollingBufferCache's, step by step."""
    w, B, h, d, T0 = 6, 2, 3, 4, 5
    ours = M.RollingKVCache(1, B, h, d, w, dtype=torch.float64)
    course = RollingBufferCache(w)
    q, k, v = randn(1, B, h, T0 + 12, d), randn(2, B, h, T0 + 12, d), randn(3, B, h, T0 + 12, d)
    from course_lib.attention.gqa import grouped_query_attention
    torch.testing.assert_close(ours.attend(0, q[:, :, :T0], k[:, :, :T0], v[:, :, :T0], grouped_query_attention),
                               course.prefill(q[:, :, :T0], k[:, :, :T0], v[:, :, :T0]))
    for t in range(T0, T0 + 12):
        s = slice(t, t + 1)
        torch.testing.assert_close(ours.attend(0, q[:, :, s], k[:, :, s], v[:, :, s], grouped_query_attention),
                                   course.decode(q[:, :, s], k[:, :, s], v[:, :, s]))
    assert ours.length == T0 + 12


def test_learned_positions_stop_at_block_size():
    model = M.GPT(tiny(positions="learned", block_size=8))
    model(torch.zeros(1, 8, dtype=torch.long))
    with pytest.raises(ValueError, match="block_size"):
        model(torch.zeros(1, 9, dtype=torch.long))
    with pytest.raises(ValueError):
        model(torch.zeros(8))                                                           # not token ids


def test_learned_positions_generate_crops_without_cache_and_refuse_with_one():
    model = build(tiny(**CONFIGS["gpt2"], block_size=8))
    prompt = torch.zeros(1, 3, dtype=torch.long)
    out = model.generate(prompt, 20, temperature=0, use_cache=False)                   # 23 > block_size
    assert out.shape == (1, 23)
    with torch.no_grad():                                                               # the last step saw 8 tokens
        assert out[0, -1] == model(out[:, -9:-1])[0, -1].argmax()
    with pytest.raises(ValueError, match="block_size"):
        model.generate(prompt, 20, temperature=0)
    assert torch.equal(model.generate(prompt, 6, temperature=0), out[:, :9])          # within block_size: the same


@pytest.mark.parametrize("name", ["gpt2", "modern", "mixtral"])
def test_with_params_matches_a_parameter_budget(name):
    config = tiny(**CONFIGS[name])
    for target in (30_000, 60_000):
        got = M.with_params(config, target)
        per_step = M.GPT(replace(got, d_ff=got.d_ff + 8)).num_params() - M.GPT(got).num_params()
        assert got.d_ff % 8 == 0 and abs(M.GPT(got).num_params() - target) <= per_step / 2 + 1


def test_time_per_token():
    model = build(tiny(**CONFIGS["modern-mqa-window"]))
    prompt = torch.zeros(1, 2, dtype=torch.long)
    for kind in ("kv", "rolling", None):
        t = M.time_per_token(model, prompt, 5, cache_kind=kind)
        assert t.shape == (5,) and bool((t > 0).all())


def test_sampling():
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.9], [5.0, -1.0, 0.0, 4.0]])
    assert torch.equal(M.sample_next(logits, 0), torch.tensor([[1], [0]]))
    assert torch.equal(M.sample_next(logits, 1.0, top_k=1), torch.tensor([[1], [0]]))
    g = torch.Generator().manual_seed(0)
    draws = torch.cat([M.sample_next(logits, 1.0, top_k=2, generator=g) for _ in range(300)], dim=1)
    assert set(draws[0].tolist()) == {1, 3} and set(draws[1].tolist()) == {0, 3}
    cold = torch.cat([M.sample_next(logits, 0.05, generator=g) for _ in range(50)], dim=1)
    assert bool((cold[1] == 0).all())
    with pytest.raises(ValueError):
        M.sample_next(logits, -1.0)


# ---------------------------------------------------------------------------------------------------------
# AdamW: decoupled weight decay, none on norms and biases
# ---------------------------------------------------------------------------------------------------------
def test_param_groups_skip_norms_and_biases():
    model = M.GPT(tiny(norm="layernorm", mlp="gelu", bias=True, positions="learned"))
    decay, no_decay = TR.param_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    nd = {names[id(p)] for p in no_decay["params"]}
    assert nd and all(n.endswith("bias") or "norm" in n for n in nd)
    assert {n for n in names.values() if n.endswith("bias") or "norm" in n} == nd
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))   # tied once


def test_adamw_decay_is_decoupled_and_skips_norms_and_biases():
    model = M.GPT(tiny(norm="layernorm", mlp="gelu", bias=True, positions="learned"))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.5)                                                      # no zero biases: decay would show
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    lr, wd = 0.1, 0.3
    opt = TR.make_optimizer(model, lr, wd)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)                                         # Adam's step is 0/(0+ε) = 0
    opt.step()
    for n, p in model.named_parameters():
        factor = 1.0 if (n.endswith("bias") or "norm" in n) else 1 - lr * wd  # θ ← θ − ηλθ, not through Adam
        torch.testing.assert_close(p.detach(), before[n] * factor, msg=n)


# ---------------------------------------------------------------------------------------------------------
# Data, schedule, training loop
# ---------------------------------------------------------------------------------------------------------
def test_char_data_and_batches():
    data = TR.char_data()
    tok = data.tokenizer
    assert tok.vocab_size == len(set(tok.chars)) and 80 <= tok.vocab_size <= 200
    text = 'The "assert" statement'
    assert tok.decode(tok.encode(text)) == text
    n = len(data.train) + len(data.val)
    assert abs(len(data.val) - 0.1 * n) <= 1 and n > 400_000
    x, y = TR.get_batch(data.train, 4, 16, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (4, 16) and torch.equal(x[:, 1:], y[:, :-1])
    with pytest.raises(ValueError):
        tok.encode("€")
    with pytest.raises(ValueError):
        TR.char_data(val_fraction=1.5)


def test_lr_schedule():
    lrs = [TR.lr_at(s, 1.0, 100, 10) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:])) and lrs[-1] == pytest.approx(0.1, abs=1e-3)


def test_training_lowers_the_validation_loss_and_clips_gradients():
    data = TR.char_data(text="abcabd abcabe " * 200)
    model = M.GPT(tiny(vocab_size=data.tokenizer.vocab_size, mlp="moe", window=4))
    cfg = TR.TrainConfig(steps=30, batch_size=8, block_size=16, lr=1e-2, warmup=3, z_loss=1e-4, eval_every=10,
                         eval_windows=8, grad_clip=0.5)
    logged = []
    hist = TR.train_lm(model, data.train, data.val, cfg, log=logged.append, progress=False)
    assert hist["eval_step"] == [10, 20, 30] and len(logged) == 30 and "val/loss" in logged[-1]
    assert hist["val_loss"][-1] < 0.6 * math.log(data.tokenizer.vocab_size)
    assert hist["val_loss"][-1] == pytest.approx(TR.evaluate(model, data.val, 16, 8))
    last = torch.stack([p.grad.norm() for p in model.parameters() if p.grad is not None]).norm().item()
    assert last <= 0.5 * (1 + 1e-4) and len(hist["grad_norm"]) == 30      # the last step's gradient, clipped


# ---------------------------------------------------------------------------------------------------------
# Grading: the references pass, plausible mistakes and shortcuts do not
# ---------------------------------------------------------------------------------------------------------
EXERCISES = {"rms_norm": M.rms_norm, "swiglu": M.swiglu, "z_loss": TR.z_loss, "topk_routing": M.topk_routing}


@pytest.mark.grading
@pytest.mark.parametrize("name", EXERCISES)
def test_references_pass_grading(name):
    assert grading.exercises_of("capstone").keys() == EXERCISES.keys()
    assert grading.verify(grading.record(name, EXERCISES[name], device=["cpu"]), on=["cpu"]).passed


def _rms_layernorm(x, weight, eps=1e-5):
    return F.layer_norm(x, x.shape[-1:], weight, None, eps)


def _rms_eps_outside(x, weight, eps=1e-5):
    return x / (x.pow(2).mean(-1, keepdim=True).sqrt() + eps) * weight


def _rms_torch(x, weight, eps=1e-5):
    return F.rms_norm(x, x.shape[-1:], weight, eps)


def _rms_module(x, weight, eps=1e-5):                    # right values and gradients, but torch's own RMSNorm
    norm = torch.nn.RMSNorm(x.shape[-1], eps=eps, elementwise_affine=False, device=x.device)
    return (norm(x.float() if x.dtype != torch.float64 else x) * weight).to(x.dtype)


def _rms_native(x, weight, eps=1e-5):                    # in x's own dtype: x² overflows float16 above 256
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def _swiglu_swapped(x, W_gate, W_up, W_down):
    return (F.silu(x @ W_up) * (x @ W_gate)) @ W_down


def _swiglu_gelu(x, W_gate, W_up, W_down):
    return (F.gelu(x @ W_gate) * (x @ W_up)) @ W_down


def _z_naive(logits):
    lf = logits.to(torch.promote_types(logits.dtype, torch.float32))
    return torch.log(torch.exp(lf).sum(-1)).pow(2).mean()


def _z_sum(logits):
    return torch.logsumexp(logits.to(torch.promote_types(logits.dtype, torch.float32)), -1).pow(2).sum()


def _z_bf16(logits):
    return torch.logsumexp(logits, -1).pow(2).mean()


def _route_softmax_all(logits, k):
    w, idx = torch.topk(torch.softmax(logits.double(), -1), k)
    return w.to(logits.dtype), idx


def _route_unsorted(logits, k):
    w, idx = M.topk_routing(logits, k)
    return w.flip(-1), idx.flip(-1)


WRONG = [("rms_norm", _rms_layernorm), ("rms_norm", _rms_eps_outside), ("rms_norm", _rms_torch), ("rms_norm", _rms_native),
         ("swiglu", _swiglu_swapped), ("swiglu", _swiglu_gelu), ("z_loss", _z_naive), ("z_loss", _z_sum),
         ("z_loss", _z_bf16), ("topk_routing", _route_softmax_all), ("topk_routing", _route_unsorted)]
if HAS_TORCH_RMSNORM:
    WRONG.append(("rms_norm", _rms_module))


@pytest.mark.grading
@pytest.mark.parametrize("name,fn", WRONG, ids=[f.__name__ for _, f in WRONG])
def test_plausible_mistakes_fail_grading(name, fn):
    verdict = grading.verify(grading.record(name, fn, device=["cpu"]), on=["cpu"])
    assert not verdict.passed
    if fn in (_rms_torch, _rms_module):
        assert "implement yourself" in verdict.message


@pytest.mark.grading
def test_equally_valid_variants_pass_grading():
    def rms_native(x, weight, eps=1e-5):                     # rsqrt, in float32 at least
        xf = x.to(torch.promote_types(x.dtype, torch.float32))
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps) * weight).to(x.dtype)

    def swiglu_native(x, W_gate, W_up, W_down):              # F.silu, in x's dtype
        return (F.silu(x @ W_gate) * (x @ W_up)) @ W_down

    def route_hf(logits, k):
        w, idx = hf_mixtral_router(logits.to(torch.promote_types(logits.dtype, torch.float32)), k)
        return w.to(logits.dtype), idx
    for name, fn in (("rms_norm", rms_native), ("swiglu", swiglu_native), ("topk_routing", route_hf)):
        verdict = grading.verify(grading.record(name, fn, device=["cpu"]), on=["cpu"])
        assert verdict.passed, verdict.message


# ---------------------------------------------------------------------------------------------------------
# Devices
# ---------------------------------------------------------------------------------------------------------
def test_model_and_generation_on_device(device):
    model = M.GPT(tiny(**CONFIGS["mixtral"])).to(device)
    prompt = torch.zeros(2, 3, dtype=torch.long, device=device)
    out = model.generate(prompt, 6, top_k=3, generator=torch.Generator(device=device).manual_seed(0))
    assert out.device.type == device.type and out.shape == (2, 9)
    ref = model.generate(prompt, 6, top_k=3, use_cache=False, generator=torch.Generator(device=device).manual_seed(0))
    assert torch.equal(out, ref)
    assert model.new_cache(1, 4).k.device.type == device.type


@pytest.mark.cuda
@pytest.mark.parametrize("name", EXERCISES)
def test_references_pass_grading_on_cuda(name):
    grading.check(name, EXERCISES[name], device=["cpu", "cuda"])
