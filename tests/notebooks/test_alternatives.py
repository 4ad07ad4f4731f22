"""Every graded exercise accepts correct answers written another way than the reference (issue 24, item 3).

For each assignment, ONE execution of its solution notebook (``solutions/<a>/<a>.ipynb``, top to bottom as a
student runs it, ``illustrative`` demos included, short configuration ``NBGRADER_EXECUTION=ci``) in which
the solution cell of EVERY exercise holds an alternative correct implementation instead of the
instructor's answer: loops instead of vectorised code, another but equivalent formula, another
intermediate dtype. The alternatives are those of ``tests/course_lib/test_hidden_<a>.py`` (module-level
functions, imported by path; their source, with the imports and helpers it reads, becomes the cell), or
written below where the colleagues' versions are lambdas or nested, or miss part of the contract that
only the visible tests check (grouped_query_attention's ValueError). The test cells then run as the notebook runs them: their visible tests, then their
``### BEGIN HIDDEN TESTS`` block, which calls ``grading.check`` (the hidden cases). So each alternative
passes both.

The same execution checks two more things, each in a cell inserted after the exercise's test cell that
runs in a copy of the notebook's namespace (nothing it defines leaks into the rest of the notebook):

* more alternatives of the same exercise (``EXTRA``): the whole test cell, visible and hidden tests;
* where the visible tests compare with a PyTorch built-in (F.conv2d, F.scaled_dot_product_attention,
  torch.softmax, torch.optim.SGD, ...), that built-in wrapped to the exercise's signature (``BUILTIN``)
  passes the visible tests (only them: the hidden cases forbid it). Two visible tests reject their
  built-in by design, and the test checks that they do, with their own message: conv2d_forward_unfold
  switches F.conv2d off while it runs, and sliding_window_chunks counts FLOPs (the full T x T band mask
  of SDPA is quadratic).

Every failing cell is reported at once (the notebook runs with ``allow_errors``), by grade id or label.
"""
from __future__ import annotations

import ast
import copy
import importlib.util
import inspect
import math
import os
import re
import sys
import textwrap
import types
from pathlib import Path

import nbformat
import pytest
import torch
import torch.nn.functional as F
from nbclient import NotebookClient

from autograder.course.source import REPO
from course_lib import grading

pytestmark = pytest.mark.notebooks

HIDDEN = Path(__file__).resolve().parent.parent / "course_lib"


def _hidden(assignment: str) -> types.ModuleType:
    """tests/course_lib/test_hidden_<assignment>.py, imported by path (once) under a private name."""
    name = f"_alternatives_hidden_{assignment}"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, HIDDEN / f"test_hidden_{assignment}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


# ========================================================================================================
# Alternatives written here (the colleagues' versions of these are lambdas or nested in tests)
# ========================================================================================================
def gqa_param_count_shapes(d_model, h_q, h_kv, d_head):
    """The four matrices' shapes, multiplied out one by one."""
    if h_q % h_kv:
        raise ValueError(f"h_q = {h_q} is not a multiple of h_kv = {h_kv}")
    shapes = [(d_model, h_q * d_head), (d_model, h_kv * d_head), (d_model, h_kv * d_head), (h_q * d_head, d_model)]
    return sum(math.prod(shape) for shape in shapes)


def kv_bytes_per_token_element_size(layers, h_kv, d_head, dtype=torch.bfloat16):
    """Bytes per element from an empty tensor (not dtype.itemsize), a loop over the layers."""
    per_element = torch.empty(0, dtype=dtype).element_size()
    total = 0
    for _ in range(layers):
        total += 2 * h_kv * d_head * per_element
    return total


def kv_cache_bytes_meta(n_layers, h_kv, d_head, tokens, dtype, batch=1):
    """The cache itself, on the meta device (no memory): its nbytes."""
    return torch.empty(2, n_layers, batch, h_kv, tokens, d_head, dtype=dtype, device="meta").nbytes


_gqa = _hidden("gqa")
gqa_einsum, gqa_loop = _gqa.gqa_einsum, _gqa.gqa_loop


def gqa_einsum_raising(q, k, v, mask=None):
    """gqa_einsum with the ValueError of the contract (the hidden cases do not ask for it, the visible do)."""
    if q.shape[1] % k.shape[1]:
        raise ValueError(f"h_q = {q.shape[1]} query heads cannot be grouped over h_kv = {k.shape[1]} heads")
    return gqa_einsum(q, k, v, mask)


def gqa_loop_raising(q, k, v, mask=None):
    """gqa_loop with the ValueError of the contract."""
    if q.shape[1] % k.shape[1] != 0:
        raise ValueError("h_q must be a multiple of h_kv")
    return gqa_loop(q, k, v, mask)


def conv_unfold_einsum(x, weight, bias=None, stride=1, padding=0):
    """im2col by F.unfold, the inner products by einsum (not a matrix product), the output size from the
    number of columns."""
    N = x.shape[0]
    C_out, _, K_h, K_w = weight.shape
    H_out = (x.shape[2] + 2 * padding - K_h) // stride + 1
    cols = F.unfold(x, (K_h, K_w), padding=padding, stride=stride)            # (N, C·K_h·K_w, L)
    y = torch.einsum("nkl,ok->nol", cols, weight.flatten(1))                  # (N, C', L)
    if bias is not None:
        y = y + bias.reshape(1, C_out, 1)
    return y.reshape(N, C_out, H_out, cols.shape[-1] // H_out if H_out else 0)


# ========================================================================================================
# PyTorch's own operations, wrapped to the exercises' signatures (visible tests only: the hidden cases
# forbid them)
# ========================================================================================================
def torch_rms_norm(x, weight, eps=1e-5):
    return F.rms_norm(x, (x.shape[-1],), weight, eps)


def torch_swiglu(x, W_gate, W_up, W_down):
    return F.linear(F.silu(F.linear(x, W_gate.T)) * F.linear(x, W_up.T), W_down.T)      # Llama's FeedForward


def torch_topk_routing(router_logits, k):
    probs = torch.softmax(router_logits, dim=-1)                                           # Mixtral's router
    weights, indices = torch.topk(probs, k, dim=-1)
    return weights / weights.sum(dim=-1, keepdim=True), indices


def torch_conv2d_forward(x, weight, bias=None, stride=1, padding=0):
    return F.conv2d(x, weight, bias, stride=stride, padding=padding)


def torch_conv2d_backward(dy, x, weight, stride=1, padding=0):
    x, weight = x.detach().requires_grad_(True), weight.detach().requires_grad_(True)
    bias = torch.zeros(weight.shape[0], dtype=x.dtype, device=x.device, requires_grad=True)
    y = F.conv2d(x, weight, bias, stride=stride, padding=padding)
    return torch.autograd.grad(y, (x, weight, bias), dy)


def torch_conv2d_forward_unfold(x, weight, bias=None, stride=1, padding=0):
    return F.conv2d(x, weight, bias, stride=stride, padding=padding)


def torch_maxpool2d_forward(x, kernel_size, stride=None):
    return F.max_pool2d(x, kernel_size, stride)


def torch_maxpool2d_backward(dy, x, kernel_size, stride=None):
    x = x.detach().requires_grad_(True)
    (dx,) = torch.autograd.grad(F.max_pool2d(x, kernel_size, stride), x, dy)
    return dx


def torch_convolve2d(x, F_, alpha_0=0.0, stride=1):
    return F.conv2d(x[None, None], F_[None, None], stride=stride)[0, 0] + alpha_0


def torch_zero_pad(x, p):
    return F.pad(x, (p, p, p, p))


def torch_downsample_average(x, k):
    return F.avg_pool2d(x[None, None], k)[0, 0]


def torch_max_pool_image(x, k, stride=None):
    return F.max_pool2d(x[None, None], k, stride)[0, 0]


def torch_grouped_query_attention(q, k, v, mask=None):
    if q.shape[1] % k.shape[1]:
        raise ValueError(f"h_q = {q.shape[1]} is not a multiple of h_kv = {k.shape[1]}")
    mask = None if mask is None else mask.to(q.dtype)                     # SDPA wants the dtype of q
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)


def torch_cached_attention_step(q_new, k_new, v_new, cache_k, cache_v, pos):
    K = torch.cat((cache_k[..., :pos, :], k_new), dim=-2)
    V = torch.cat((cache_v[..., :pos, :], v_new), dim=-2)
    T, S = q_new.shape[-2], K.shape[-2]
    allowed = torch.ones(T, S, dtype=torch.bool, device=q_new.device).tril(S - T)
    return F.scaled_dot_product_attention(q_new, K, V, attn_mask=allowed)


def torch_fc3d_forward(x, alpha, alpha0):
    return F.linear(torch.flatten(x, start_dim=-3), alpha.T, alpha0)                     # nn.Linear's forward


def torch_stable_softmax(z, dim=-1):
    return torch.softmax(z, dim=dim)


def torch_conv_vs_fc_params(C_in, H, W, C_out, K, padding=0):
    def count(module):
        return sum(p.numel() for p in module.parameters())
    conv = torch.nn.Conv2d(C_in, C_out, K, padding=padding, device="meta")
    _, _, H_out, W_out = conv(torch.empty(1, C_in, H, W, device="meta")).shape
    fc = torch.nn.Linear(C_in * H * W, C_out * H_out * W_out, device="meta")
    return count(conv), H_out * W_out * count(conv), count(fc)


def torch_sgd_step(params, grads, lr):
    leaves = [p.detach().clone().requires_grad_(True) for p in params]
    for leaf, g in zip(leaves, grads):
        leaf.grad = g.detach().clone()
    torch.optim.SGD(leaves, lr=lr).step()
    return [leaf.detach() for leaf in leaves]


def torch_reconstruction_loss(x, x_hat):
    return F.mse_loss(x_hat, x, reduction="sum") / x.shape[0]


def torch_encode_stack(x, weights, biases):
    layers = []
    for W, b in zip(weights, biases):
        linear = torch.nn.Linear(W.shape[1], W.shape[0], dtype=W.dtype)
        with torch.no_grad():
            linear.weight.copy_(W)
            linear.bias.copy_(b)
        layers += [linear, torch.nn.Sigmoid()]
    return torch.nn.Sequential(*layers)(x)


def torch_masked_lm_loss(logits, targets, pad_mask):
    V = logits.shape[-1]
    return F.cross_entropy(logits.reshape(-1, V), targets.masked_fill(pad_mask, -100).reshape(-1), ignore_index=-100)


def torch_sentence_log_likelihood(logits, targets, pad_mask):
    nll = F.cross_entropy(logits.transpose(1, 2), targets.masked_fill(pad_mask, -100), ignore_index=-100,
                          reduction="none")                                  # (B, T), 0 at the padding
    return -nll.sum(dim=-1)


def _band(n, w, device=None):
    return torch.ones(n, n, dtype=torch.bool, device=device).tril().triu(-(w // 2))


def torch_sliding_window_loop(q, k, v, w):
    return F.scaled_dot_product_attention(q, k, v, attn_mask=_band(q.shape[-2], w, q.device))


def torch_sliding_window_chunks(q, k, v, w):
    return F.scaled_dot_product_attention(q, k, v, attn_mask=_band(q.shape[-2], w, q.device))


def torch_rolling_buffer_decode_step(q, k, v, k_cache, v_cache, pos):
    W = k_cache.shape[-2]
    k_cache, v_cache = k_cache.clone(), v_cache.clone()
    k_cache[..., pos % W, :], v_cache[..., pos % W, :] = k[..., 0, :], v[..., 0, :]
    filled = min(pos + 1, W)
    out = F.scaled_dot_product_attention(q, k_cache[..., :filled, :], v_cache[..., :filled, :])
    return out, k_cache, v_cache


# ========================================================================================================
# Which alternative goes where
# ========================================================================================================
def _ours(name):
    return lambda: globals()[name]


def _theirs(assignment, name):
    return lambda: getattr(_hidden(assignment), name)


# exercise -> the alternative that replaces the instructor's answer in the solution cell
PRIMARY = {
    # capstone
    "rms_norm": _theirs("capstone", "rms_norm_float64"),          # float64 inside, rsqrt of square().mean()
    "swiglu": _theirs("capstone", "swiglu_einsum"),               # einsum and F.silu, in x's dtype
    "z_loss": _theirs("capstone", "z_loss_manual"),               # max + log(sum(exp)) by hand, sum / numel
    "topk_routing": _theirs("capstone", "topk_sort"),             # argsort + gather instead of topk
    # cnn_layers
    "numerical_gradient": _theirs("cnn_layers", "numgrad_indices"),      # itertools multi-indices, list of floats
    "conv2d_forward": _theirs("cnn_layers", "conv_einsum"),              # Tensor.unfold windows + einsum (no loops)
    "conv2d_backward": _theirs("cnn_layers", "conv_backward_fold"),      # im2col / col2im by F.unfold / F.fold
    "conv2d_forward_unfold": _ours("conv_unfold_einsum"),                # F.unfold + einsum instead of @
    "maxpool2d_forward": _theirs("cnn_layers", "maxpool_amax"),          # Tensor.unfold + amax
    "maxpool2d_backward": _theirs("cnn_layers", "maxpool_backward_scatter"),   # all windows' argmax, scatter_add_
    # convolution
    "convolve2d": _theirs("convolution", "convolve2d_unfold_einsum"),    # unfold + einsum in float64
    "zero_pad": _theirs("convolution", "zero_pad_cat"),                  # torch.cat of zero bands
    "gaussian_kernel": _theirs("convolution", "gaussian_separable"),     # linspace, outer product of 1-D Gaussians
    "downsample_average": _theirs("convolution", "downsample_reshape"),  # reshape (H', k, W', k) + mean
    "max_pool_image": _theirs("convolution", "max_pool_unfold_amax"),    # unfold + amax
    # gqa
    "repeat_kv": _theirs("gqa", "repeat_by_index"),                      # index head n // g
    "grouped_query_attention": _ours("gqa_einsum_raising"),              # einsum on (B, h_kv, g, T, d), torch.where mask
    "gqa_param_count": _ours("gqa_param_count_shapes"),                  # math.prod of the four shapes
    "kv_cache_bytes_per_token": _ours("kv_bytes_per_token_element_size"),  # element_size(), a loop over layers
    # kv_cache
    "cache_update": _theirs("kv_cache", "update_into_clone"),            # slicing a clone
    "cached_attention_step": _theirs("kv_cache", "step_where"),          # einsum, torch.where mask, exp/sum softmax
    "kv_cache_bytes": _ours("kv_cache_bytes_meta"),                      # nbytes of the cache on the meta device
    # lenet
    "fc3d_forward": _theirs("lenet", "fc3d_einsum"),                     # einsum over (C, H, W)
    "stable_softmax": _theirs("lenet", "softmax_logsumexp"),             # exp(z - logsumexp(z)) in float64
    "conv_vs_fc_params": _theirs("lenet", "conv_vs_fc_loop"),            # a sum over kernels, fc = (A + 1)·B
    "sgd_step": _theirs("lenet", "sgd_add"),                             # torch.add(p, g, alpha=-lr)
    # pretraining
    "reconstruction_loss": _theirs("pretraining", "recon_loop"),         # torch.dot per example
    "encode_stack": _theirs("pretraining", "encode_einsum"),             # einsum and 1 / (1 + exp(-z))
    "masked_lm_loss": _theirs("pretraining", "mlm_alt"),                 # logits - logsumexp, torch.where
    "sentence_log_likelihood": _theirs("pretraining", "sll_loop"),       # a loop over sentences, float64
    # rope
    "rope_thetas": _theirs("rope", "thetas_inv_freq"),                   # Hugging Face's 1 / base^(2k/d)
    "rope_matrix": _theirs("rope", "matrix_blocks"),                     # math.cos/sin 2×2 blocks, block_diag
    "apply_rope_pairs": _theirs("rope", "pairs_complex"),                # complex multiplication (Meta's Llama)
    "apply_rope_halves": _theirs("rope", "halves_rotate_half"),          # Hugging Face's rotate_half
    # sliding_window
    "sliding_window_mask": _theirs("sliding_window", "mask_where"),      # tril().triu() + torch.where
    "sliding_window_loop": _theirs("sliding_window", "loop_float64"),    # einsum + hand-written softmax, float64
    "sliding_window_chunks": _theirs("sliding_window", "chunks_gather"),  # key chunks gathered by index, no unfold
    "rolling_buffer_decode_step": _theirs("sliding_window", "decode_where"),  # all W slots, torch.where
}

# exercise -> more alternatives, each run through the whole test cell in a copy of the namespace
EXTRA = {
    "topk_routing": [_theirs("capstone", "topk_hf")],
    "conv2d_backward": [_theirs("cnn_layers", "conv_backward_einsum")],
    "maxpool2d_backward": [_theirs("cnn_layers", "maxpool_backward_item")],
    "convolve2d": [_theirs("convolution", "convolve2d_pixel_loop")],
    "zero_pad": [_theirs("convolution", "zero_pad_where")],
    "max_pool_image": [_theirs("convolution", "max_pool_window_loop")],
    "repeat_kv": [_theirs("gqa", "repeat_by_cat")],
    "grouped_query_attention": [_ours("gqa_loop_raising")],
    "cache_update": [_theirs("kv_cache", "update_into_new_empty")],
    "cached_attention_step": [_theirs("kv_cache", "step_loop")],
    "fc3d_forward": [_theirs("lenet", "fc3d_reshape")],
    "stable_softmax": [_theirs("lenet", "softmax_where")],
    "sgd_step": [_theirs("lenet", "sgd_no_grad")],
    "encode_stack": [_theirs("pretraining", "encode_alt")],
    "masked_lm_loss": [_theirs("pretraining", "mlm_item")],
    "sentence_log_likelihood": [_theirs("pretraining", "sll_alt")],
}

# exercise -> (PyTorch's own operation wrapped, None if the visible tests accept it, or the fragment of the
# visible test's message that rejects it by design)
BUILTIN = {
    "rms_norm": (_ours("torch_rms_norm"), None),                         # torch.nn.RMSNorm
    "swiglu": (_ours("torch_swiglu"), None),                             # Llama's w2(F.silu(w1(x)) * w3(x))
    "topk_routing": (_ours("torch_topk_routing"), None),                 # Mixtral: torch.softmax, torch.topk
    "conv2d_forward": (_ours("torch_conv2d_forward"), None),             # F.conv2d
    "conv2d_backward": (_ours("torch_conv2d_backward"), None),           # autograd through F.conv2d
    "conv2d_forward_unfold": (_ours("torch_conv2d_forward_unfold"), "must not call F.conv2d"),
    "maxpool2d_forward": (_ours("torch_maxpool2d_forward"), None),       # F.max_pool2d
    "maxpool2d_backward": (_ours("torch_maxpool2d_backward"), None),     # autograd through F.max_pool2d
    "convolve2d": (_ours("torch_convolve2d"), None),                     # nnf.conv2d
    "zero_pad": (_ours("torch_zero_pad"), None),                         # nnf.pad
    "downsample_average": (_ours("torch_downsample_average"), None),     # nnf.avg_pool2d
    "max_pool_image": (_ours("torch_max_pool_image"), None),             # nnf.max_pool2d
    "grouped_query_attention": (_ours("torch_grouped_query_attention"), None),   # SDPA, enable_gqa=True
    "cached_attention_step": (_ours("torch_cached_attention_step"), None),       # SDPA with a boolean mask
    "fc3d_forward": (_ours("torch_fc3d_forward"), None),                 # nn.Linear after torch.flatten
    "stable_softmax": (_ours("torch_stable_softmax"), None),             # torch.softmax
    "conv_vs_fc_params": (_ours("torch_conv_vs_fc_params"), None),       # nn.Conv2d, nn.Linear parameters
    "sgd_step": (_ours("torch_sgd_step"), None),                         # torch.optim.SGD
    "reconstruction_loss": (_ours("torch_reconstruction_loss"), None),   # F.mse_loss(reduction="sum") / N
    "encode_stack": (_ours("torch_encode_stack"), None),                 # nn.Sequential(Linear, Sigmoid, ...)
    "masked_lm_loss": (_ours("torch_masked_lm_loss"), None),             # F.cross_entropy(ignore_index=-100)
    "sentence_log_likelihood": (_ours("torch_sentence_log_likelihood"), None),   # -F.cross_entropy, summed
    "sliding_window_loop": (_ours("torch_sliding_window_loop"), None),   # SDPA with the band mask
    "sliding_window_chunks": (_ours("torch_sliding_window_chunks"), "your matrix products did"),   # quadratic
    "rolling_buffer_decode_step": (_ours("torch_rolling_buffer_decode_step"), None),   # SDPA over the filled slots
}


# ========================================================================================================
# An alternative as the source of a cell: its imports, its helpers, the function under the exercise's name
# ========================================================================================================
def _code_names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _code_names(const)
    return names


_TREES: dict[str, tuple[str, ast.Module]] = {}


def _module_tree(path: str) -> tuple[str, ast.Module]:
    if path not in _TREES:
        text = Path(path).read_text()
        _TREES[path] = (text, ast.parse(text))
    return _TREES[path]


def _top_level(fn) -> tuple[str, ast.FunctionDef]:
    """(the source, the module-level ``def``) of a function defined at the top of its file."""
    text, tree = _module_tree(fn.__code__.co_filename)
    node = next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == fn.__name__
                 and n.lineno <= fn.__code__.co_firstlineno <= n.end_lineno), None)
    assert node is not None, f"{fn.__qualname__} is not a module-level function: write it at the top of a module"
    return ast.get_source_segment(text, node), node


def _binding(path: str, g: str) -> str | None:
    """The statement of the module at ``path`` that binds the global ``g``: an import (of that name only)
    or an assignment."""
    text, tree = _module_tree(path)
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                if (alias.asname or alias.name.split(".")[0]) == g:
                    what = f"{alias.name}" + (f" as {alias.asname}" if alias.asname else "")
                    return f"import {what}" if isinstance(node, ast.Import) else \
                        f"from {'.' * node.level}{node.module} import {what}"
    assigned = [n for n in tree.body if isinstance(n, ast.Assign)
                and any(isinstance(t, ast.Name) and t.id == g for t in n.targets)]
    return ast.get_source_segment(text, assigned[-1]) if assigned else None


def source_of(fn, name: str) -> str:
    """Python source that defines ``fn`` as ``name``, to paste into a cell: the imports and module-level
    helpers (functions, also from other modules, and constants) it reads, then ``fn``'s own source with
    ``def name(``. Only the names the code reads are imported, so the cell rebinds nothing else."""
    imports, helpers, seen = set(), [], {fn.__name__}

    references = {inspect.unwrap(r) for ex in grading.exercises().values() for r in (ex.reference, *ex.gives_away)}

    def visit(f) -> None:
        names = _code_names(f.__code__)
        for g in sorted(names & set(f.__globals__)):
            value = f.__globals__[g]
            used = [value] + ([getattr(value, n, None) for n in names] if isinstance(value, types.ModuleType) else [])
            assert not any(callable(u) and inspect.unwrap(u) in references for u in used), \
                f"{f.__name__} calls a reference of course_lib ({g}): not an answer a student could write"
            if isinstance(value, types.FunctionType) and value.__module__ not in ("torch",) \
                    and not value.__module__.startswith(("torch.", "course_lib.")):
                if value.__name__ in seen:
                    continue
                assert value.__name__ == g, f"{f.__name__} calls {value.__name__} as {g}"
                seen.add(g)
                helpers.append(_top_level(value)[0])
                visit(value)
            elif g not in seen:
                seen.add(g)
                statement = _binding(f.__code__.co_filename, g)
                assert statement is not None, f"{f.__name__} reads {g!r}, which its module neither imports nor assigns"
                (imports.add if statement.startswith(("import ", "from ")) else helpers.append)(statement)

    visit(fn)
    own, n = re.subn(rf"^def {re.escape(fn.__name__)}\(", f"def {name}(", _top_level(fn)[0], count=1)
    assert n == 1, own[:80]
    return "\n".join(sorted(imports)) + "\n\n\n" + "\n\n\n".join([*helpers, own]) + "\n"


def _same_code(a: str, b: str, name: str) -> bool:
    def body(src):
        fn = next(n for n in ast.parse(src).body if isinstance(n, ast.FunctionDef) and n.name == name)
        return ast.dump(ast.Module([s for s in fn.body if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))], []))
    return body(a) == body(b)


# ========================================================================================================
# The notebook: alternatives in the solution cells, isolated checks after the test cells
# ========================================================================================================
_SETUP = textwrap.dedent('''\
    # Inserted by tests/notebooks/test_alternatives.py: runs code in a copy of the notebook's namespace.
    import linecache as _alt_linecache


    def _alt_isolated(label, definition, test, rejected_with=None):
        namespace = dict(globals())
        for part, src in (("definition", definition), ("test", test)):
            filename = f"<{label}: {part}>"
            _alt_linecache.cache[filename] = (len(src), None, src.splitlines(True), filename)
            code = compile(src, filename, "exec")
            if part == "test" and rejected_with is not None:
                try:
                    exec(code, namespace)
                except AssertionError as e:
                    assert rejected_with in str(e), f"{label}: rejected, but not by design: {e}"
                    print(f"{label}: rejected by design ({rejected_with!r})")
                    return
                raise AssertionError(f"{label}: expected the visible tests to reject it ({rejected_with!r})")
            exec(code, namespace)
        print(f"{label}: passed")
''')


def _grade_id(cell) -> str | None:
    return cell.metadata.get("nbgrader", {}).get("grade_id")


def _isolated_cell(label: str, definition: str, test: str, rejected_with: str | None = None):
    cell = nbformat.v4.new_code_cell(
        f"_alt_isolated({label!r}, {definition!r}, {test!r}, rejected_with={rejected_with!r})")
    cell.metadata["alternatives"] = label
    return cell


def build(assignment: str, notebook_path: Path):
    """(the notebook to run, the exercises whose solution cell it replaced)."""
    nb = nbformat.read(notebook_path, as_version=4)
    exercises = grading.exercises_of(assignment)
    out, replaced = [], set()
    setup = nbformat.v4.new_code_cell(_SETUP)
    setup.metadata["alternatives"] = "setup"
    out.append(setup)
    for cell in nb.cells:
        gid = _grade_id(cell)
        meta = cell.metadata.get("nbgrader", {})
        if cell.cell_type == "code" and meta.get("solution") and gid in exercises:
            alternative = source_of(PRIMARY[gid](), gid)
            assert not _same_code(alternative, cell.source, gid), f"{gid}: the alternative is the reference itself"
            cell = copy.deepcopy(cell)
            cell.source = alternative
            replaced.add(gid)
        out.append(cell)
        name = gid[len("test_"):] if gid and gid.startswith("test_") else None
        if cell.cell_type == "code" and meta.get("grade") and name in exercises:
            for alt in EXTRA.get(name, []):
                fn = alt()
                out.append(_isolated_cell(f"{name} <- {fn.__name__}", source_of(fn, name), cell.source))
            if name in BUILTIN:
                wrapper, rejected_with = BUILTIN[name]
                fn = wrapper()
                visible = cell.source.split("### BEGIN HIDDEN TESTS")[0]
                out.append(_isolated_cell(f"{name} <- {fn.__name__} (visible tests only)", source_of(fn, name),
                                          visible, rejected_with))
    nb.cells = out
    return nb, replaced


NOTEBOOKS = [(p.parent.name, p) for p in sorted((REPO / "solutions").glob("*/*.ipynb"))]


def test_every_exercise_has_an_alternative():
    """Every registered exercise has a primary alternative, and every alternative has a solution cell."""
    everything = grading.exercises()
    assert set(PRIMARY) == set(everything), (set(everything) ^ set(PRIMARY))
    assert set(EXTRA) <= set(everything) and set(BUILTIN) <= set(everything)
    for name, get in PRIMARY.items():
        fn = get()
        assert fn is not everything[name].reference, name
        assert f"def {name}(" in source_of(fn, name)


@pytest.mark.parametrize("assignment,path", NOTEBOOKS, ids=[f"{a}/{p.name}" for a, p in NOTEBOOKS])
def test_alternatives_pass_visible_and_hidden_tests(assignment, path, tmp_path, monkeypatch):
    nb, replaced = build(assignment, path)
    assert replaced == set(grading.exercises_of(assignment)), \
        f"exercises without a solution cell in {path.name}: {set(grading.exercises_of(assignment)) - replaced}"
    monkeypatch.setenv("NBGRADER_EXECUTION", os.environ.get("NBGRADER_EXECUTION") or "ci")   # short configuration
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.delenv(grading.RECORD_ENV, raising=False)      # check() verifies, it does not only record
    monkeypatch.delenv("COURSE_GRADING_DEVICES", raising=False)
    NotebookClient(nb, timeout=600, kernel_name="python3", allow_errors=True,
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    failures, visible, hidden, labels = [], set(), set(), set()
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        label = cell.metadata.get("alternatives") or _grade_id(cell) or cell.source.strip().splitlines()[0][:60]
        for output in cell.get("outputs", []):
            if output.output_type == "error":
                failures.append(f"{label}: {output.ename}: {output.evalue}")
            elif output.output_type == "stream":
                visible |= set(re.findall(r"^(\w+): visible tests passed$", output.text, flags=re.M))
                hidden |= set(re.findall(r"^(\w+): \d+ cases passed on ", output.text, flags=re.M))
                labels |= set(re.findall(r"^(.+): (?:passed|rejected by design \(.*\))$", output.text, flags=re.M))
    assert not failures, f"{assignment}, the cells that failed:\n" + "\n".join(failures)
    assert replaced <= visible, f"{assignment}: no 'visible tests passed' from {replaced - visible}"
    assert replaced <= hidden, f"{assignment}: the hidden cases did not run for {replaced - hidden}"
    inserted = {c.metadata["alternatives"] for c in nb.cells if c.metadata.get("alternatives", "setup") != "setup"}
    assert inserted <= labels, f"{assignment}: these checks printed nothing: {inserted - labels}"
