"""The attention notebooks' figures (course_lib.attention.plots) against independent oracles.

A figure is checked by what it draws, read back from its artists (line data, image arrays, scatter
offsets, patch colours), against values worked out here:

* RoPE: θ_i = base^{-2(i-1)/d} and the wavelength 2π/θ_i in plain Python; R_{Θ,m} as ``torch.block_diag`` of
  2×2 rotations from ``math``; pair i of (1, 0, 1, 0, ...) at position m is (cos mθ_i, sin mθ_i); the score
  of q = k = 1 at distance t is (2/d) Σ_i cos(tθ_i); the score of q at t and k at t − Δ is
  Σ_i [cos(Δθ_i)(q·k)_i + sin(Δθ_i)(k_{2i} q_{2i-1} − k_{2i-1} q_{2i})] / √d;
* KV cache: 2 · layers · h_kv · d_head · tokens · bytes per element (from a table), the running total of
  the per-token times without step 0, and causal softmax weights (rows sum to 1, nothing above the diagonal);
* GQA: Hugging Face's ``repeat_kv`` rule, query head n uses key/value head n // g.

Each helper that receives a student's function is also given a wrong one (identity rotation, forgotten
factor 2, tiled instead of repeated heads) and must draw something different: the figure shows the
student's code, not a reference. Old import paths (notebooks released before this module) give the very
same functions, and importing the attention code does not import matplotlib.
"""
from __future__ import annotations

import math
import subprocess
import sys

import matplotlib
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from course_lib.attention import plots
from course_lib.attention.kv_cache import kv_cache_bytes
from course_lib.attention.rope import apply_rope_pairs, rope_matrix, rope_thetas

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)

BYTES = {torch.float16: 2, torch.bfloat16: 2, torch.float32: 4, torch.float64: 8}


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _thetas(d: int, base: float = 10000.0) -> list[float]:
    return [base ** (-2 * (i - 1) / d) for i in range(1, d // 2 + 1)]


def _identity_rope(x, positions, base=10000.0):
    return x.clone()                                   # "forgot to rotate"


def _plot_axes(fig: Figure):
    return [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]


# ---------------------------------------------------------------------------------------------------------
# Every helper: a Figure with titled axes; old import paths; no matplotlib for the attention code
# ---------------------------------------------------------------------------------------------------------

def _every_figure():
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(8, generator=g, dtype=torch.float64), torch.randn(8, generator=g, dtype=torch.float64)
    return {
        "plot_vectors_2d": lambda: plots.plot_vectors_2d([[1.0, 0.5], [-0.5, 1.0]], ["a", "b"], title="t"),
        "rope_frequency_spectrum": lambda: plots.rope_frequency_spectrum(rope_thetas, d=16, context_length=64),
        "rope_matrix_heatmaps": lambda: plots.rope_matrix_heatmaps(rope_matrix, d=6, positions=(1, 3)),
        "rope_pair_trajectories": lambda: plots.rope_pair_trajectories(apply_rope_pairs, d=8, pairs=(1, 4),
                                                                       positions=range(5)),
        "rope_relative_scores": lambda: plots.rope_relative_scores(apply_rope_pairs, q, k, (5, 50), max_offset=4),
        "rope_long_range_decay": lambda: plots.rope_long_range_decay(apply_rope_pairs, d=8, max_distance=50),
        "plot_cache_anatomy": lambda: plots.plot_cache_anatomy(t=4, d=3),
        "plot_time_per_token": lambda: plots.plot_time_per_token({"a": torch.rand(20)}, start_len=2, title="t"),
        "plot_cache_memory": lambda: plots.plot_cache_memory(kv_cache_bytes, {"m": (2, 2, 4)}, 128),
        "plot_head_groups": lambda: plots.plot_head_groups(h_q=4, h_kvs=(4, 2, 1)),
    }


def test_every_helper_is_tested_here():
    assert sorted(plots.__all__) == sorted(_every_figure())


@pytest.mark.parametrize("name", sorted(_every_figure()))
def test_every_helper_returns_a_figure_with_titled_axes(name):
    fig = _every_figure()[name]()
    assert isinstance(fig, Figure)
    axes = _plot_axes(fig)
    assert axes and all(ax.get_title() for ax in axes), [ax.get_title() for ax in axes]


def test_old_import_paths_give_the_same_functions():
    from course_lib import plotting
    from course_lib.attention import kv_plots
    from course_lib.attention.gqa import plot_head_groups

    for name in plotting.__all__:
        assert getattr(plotting, name) is getattr(plots, name), name
    for name in kv_plots.__all__:
        assert getattr(kv_plots, name) is getattr(plots, name), name
    assert plot_head_groups is plots.plot_head_groups
    assert set(plotting.__all__) | set(kv_plots.__all__) | {"plot_head_groups"} == set(plots.__all__)


def test_gqa_has_no_other_lazy_attribute():
    from course_lib.attention import gqa

    assert not hasattr(gqa, "plot_cache_anatomy")
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        gqa.nope  # noqa: B018


def test_attention_code_does_not_import_matplotlib():
    code = ("import sys, course_lib.attention, course_lib.attention.gqa\n"
            "assert 'matplotlib' not in sys.modules, 'matplotlib imported'\n"
            "from course_lib.attention.gqa import plot_head_groups\n"       # the old path still works, lazily
            "assert 'matplotlib' in sys.modules and plot_head_groups.__module__ == 'course_lib.attention.plots'\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            env={**__import__("os").environ, "MPLBACKEND": "Agg"})
    assert result.returncode == 0, result.stderr[-2000:]


# ---------------------------------------------------------------------------------------------------------
# RoPE
# ---------------------------------------------------------------------------------------------------------

def test_frequency_spectrum_draws_the_passed_thetas():
    d = 32
    fig = plots.rope_frequency_spectrum(rope_thetas, d=d, context_length=100)
    ax1, ax2 = fig.axes
    theta = np.array(_thetas(d))
    np.testing.assert_allclose(ax1.lines[0].get_xdata(), np.arange(1, d // 2 + 1))
    np.testing.assert_allclose(ax1.lines[0].get_ydata(), theta, rtol=1e-12)
    np.testing.assert_allclose(ax2.lines[0].get_ydata(), 2 * math.pi / theta, rtol=1e-12)
    assert 100 in [line.get_ydata()[0] for line in ax2.lines[1:]]             # the context-length line

    wrong = plots.rope_frequency_spectrum(lambda d, base, dtype: torch.full((d // 2,), 0.5, dtype=dtype), d=d)
    np.testing.assert_allclose(wrong.axes[0].lines[0].get_ydata(), np.full(d // 2, 0.5))


def _block_rotation(m: int, d: int, base: float = 10000.0) -> torch.Tensor:
    blocks = [torch.tensor([[math.cos(m * t), -math.sin(m * t)], [math.sin(m * t), math.cos(m * t)]],
                           dtype=torch.float64) for t in _thetas(d, base)]
    return torch.block_diag(*blocks)


def test_matrix_heatmaps_show_the_passed_matrices():
    fig = plots.rope_matrix_heatmaps(rope_matrix, d=8, positions=(1, 5))
    axes = _plot_axes(fig)
    assert len(axes) == 2
    for ax, m in zip(axes, (1, 5)):
        np.testing.assert_allclose(np.asarray(ax.images[0].get_array()), _block_rotation(m, 8).numpy(), atol=1e-12)

    wrong = plots.rope_matrix_heatmaps(lambda m, d, base, dtype: torch.eye(d, dtype=dtype), d=8, positions=(1,))
    np.testing.assert_array_equal(np.asarray(_plot_axes(wrong)[0].images[0].get_array()), np.eye(8))


def test_pair_trajectories_follow_the_passed_rotation():
    d, pairs, positions = 8, (1, 2, 4), range(6)
    fig = plots.rope_pair_trajectories(apply_rope_pairs, d=d, pairs=pairs, positions=positions)
    theta = _thetas(d)
    for ax, i in zip(_plot_axes(fig), pairs):
        expected = np.array([[math.cos(m * theta[i - 1]), math.sin(m * theta[i - 1])] for m in positions])
        np.testing.assert_allclose(ax.collections[0].get_offsets(), expected, atol=1e-12)

    wrong = plots.rope_pair_trajectories(_identity_rope, d=d, pairs=pairs, positions=positions)
    for ax in _plot_axes(wrong):
        np.testing.assert_allclose(ax.collections[0].get_offsets(), [[1.0, 0.0]] * len(positions))


def test_relative_scores_match_the_offset_formula():
    d, max_offset = 8, 6
    g = torch.Generator().manual_seed(1)
    q, k = torch.randn(d, generator=g, dtype=torch.float64), torch.randn(d, generator=g, dtype=torch.float64)
    fig = plots.rope_relative_scores(apply_rope_pairs, q, k, query_positions=(10, 100, 1000), max_offset=max_offset)
    theta = _thetas(d)
    qa, qb, ka, kb = q[0::2].tolist(), q[1::2].tolist(), k[0::2].tolist(), k[1::2].tolist()
    expected = [sum(math.cos(D * t) * (qa[i] * ka[i] + qb[i] * kb[i])           # k^T R(Δθ_i) q, pair by pair
                    + math.sin(D * t) * (kb[i] * qa[i] - ka[i] * qb[i])
                    for i, t in enumerate(theta)) / math.sqrt(d) for D in range(max_offset + 1)]
    lines = [line for line in fig.axes[0].lines if len(line.get_xdata()) == max_offset + 1]
    assert len(lines) == 3
    for line in lines:                                  # the three curves coincide, on the formula
        np.testing.assert_allclose(line.get_xdata(), np.arange(max_offset + 1))
        np.testing.assert_allclose(line.get_ydata(), expected, atol=1e-9)

    wrong = plots.rope_relative_scores(_identity_rope, q, k, query_positions=(10,), max_offset=max_offset)
    np.testing.assert_allclose(wrong.axes[0].lines[0].get_ydata(), [float(q @ k) / math.sqrt(d)] * (max_offset + 1))


def test_long_range_decay_is_the_cosine_sum_of_the_passed_rotation():
    d, n = 16, 300
    fig = plots.rope_long_range_decay(apply_rope_pairs, d=d, max_distance=n)
    theta = _thetas(d)
    line = fig.axes[0].lines[0]
    expected = [2 / d * sum(math.cos(t * th) for th in theta) for t in range(1, n + 1)]
    np.testing.assert_allclose(line.get_xdata(), np.arange(1, n + 1))
    np.testing.assert_allclose(line.get_ydata(), expected, atol=1e-12)

    wrong = plots.rope_long_range_decay(_identity_rope, d=d, max_distance=n)
    np.testing.assert_allclose(wrong.axes[0].lines[0].get_ydata(), np.ones(n))     # no rotation: no decay


def test_vectors_2d_draws_one_arrow_per_vector_and_checks_its_input():
    v = [[1.0, 0.0], [0.0, 2.0], [-1.0, -1.0]]
    fig = plots.plot_vectors_2d(v, ["a", "b", "c"], title="three")
    ax = fig.axes[0]
    tips = sorted(tuple(np.round(a.xy, 12)) for a in ax.texts if hasattr(a, "arrow_patch") and a.arrow_patch)
    assert tips == sorted(tuple(x) for x in v)
    assert ax.patches[0].get_radius() == pytest.approx(2.0)                     # circle of radius max ‖v‖
    with pytest.raises(ValueError, match="shape"):
        plots.plot_vectors_2d([[1.0, 0.0, 0.0]], ["a"])
    with pytest.raises(ValueError):
        plots.plot_vectors_2d(v, ["a", "b"])


# ---------------------------------------------------------------------------------------------------------
# KV cache
# ---------------------------------------------------------------------------------------------------------

def test_cache_memory_draws_the_passed_byte_count():
    models = {"7B": (32, 32, 128), "70B": (80, 8, 128)}
    fig = plots.plot_cache_memory(kv_cache_bytes, models, max_tokens=4096, dtype=torch.float16, batch=2)
    lines = fig.axes[0].lines
    assert len(lines) == 2
    for line, (layers, h_kv, d_head) in zip(lines, models.values()):
        tokens = np.asarray(line.get_xdata(), dtype=float)
        expected = 2 * layers * h_kv * d_head * tokens * BYTES[torch.float16] * 2 / 2**30
        np.testing.assert_allclose(line.get_ydata(), expected, rtol=1e-12)
        assert tokens[0] == 0 and tokens[-1] == 4096
    assert line.get_ydata()[-1] == pytest.approx(2 * 1.25)       # Llama-2 70B: 1.25 GiB at 4096 tokens, batch 2

    forgot_values = lambda L, h, d, n, dtype, batch=1: L * h * d * n * dtype.itemsize * batch   # noqa: E731
    wrong = plots.plot_cache_memory(forgot_values, models, max_tokens=4096, dtype=torch.float16, batch=2)
    np.testing.assert_allclose(wrong.axes[0].lines[1].get_ydata(), line.get_ydata() / 2)


def test_time_per_token_leaves_out_step_0_and_sums_the_rest():
    secs = torch.tensor([5.0, 0.1, 0.2, 0.3, 0.4])                   # step 0 (prefill) is an outlier
    fig = plots.plot_time_per_token({"run": secs}, start_len=3)
    ax1, ax2 = fig.axes
    np.testing.assert_allclose(ax1.lines[0].get_xdata(), [4, 5, 6, 7])              # length at each step
    np.testing.assert_allclose(ax1.lines[0].get_ydata(), [100, 200, 300, 400])      # ms per token
    np.testing.assert_allclose(ax2.lines[0].get_ydata(), [0.1, 0.3, 0.6, 1.0])      # running total (s)
    with pytest.raises(ValueError):
        plots.plot_time_per_token({})


def test_cache_anatomy_shows_causal_attention_weights():
    t = 5
    fig = plots.plot_cache_anatomy(t=t, d=3, seed=2)
    A = np.asarray(fig.axes[3].images[0].get_array(), dtype=float)               # (t, t)
    assert A.shape == (t, t)
    above = np.triu(np.ones((t, t), dtype=bool), k=1)
    assert np.isnan(A[above]).all() and not np.isnan(A[~above]).any()             # j > i left blank
    np.testing.assert_allclose(np.nansum(A, axis=1), np.ones(t), atol=1e-12)      # softmax rows
    for ax in fig.axes[:3]:                                                       # Q, K, V: t × d
        assert np.asarray(ax.images[0].get_array()).shape == (t, 3)
    with pytest.raises(ValueError):
        plots.plot_cache_anatomy(t=1)


# ---------------------------------------------------------------------------------------------------------
# GQA
# ---------------------------------------------------------------------------------------------------------

def _hf_repeat_kv(x: torch.Tensor, g: int) -> torch.Tensor:
    """Hugging Face's repeat_kv: (B, h_kv, S, d) → (B, h_kv·g, S, d), head n = head n // g."""
    B, h_kv, S, d = x.shape
    return x[:, :, None, :, :].expand(B, h_kv, g, S, d).reshape(B, h_kv * g, S, d)


def _groups(ax):
    """(owner of each query head read from the patch colours, number of key/value patches, colours)."""
    rects = [p for p in ax.patches if isinstance(p, Rectangle)]
    queries = sorted((p for p in rects if p.get_y() >= 1.0), key=lambda p: p.get_x())
    kvs = [p for p in rects if p.get_y() < 0]
    kv_colour = {}
    for p in sorted(kvs, key=lambda p: p.get_x()):
        kv_colour.setdefault(tuple(np.round(p.get_facecolor()[:3], 6)), len(kv_colour))
    owner = [kv_colour[tuple(np.round(p.get_facecolor()[:3], 6))] for p in queries]
    return owner, len(kvs), {tuple(np.round(p.get_facecolor()[:3], 6)) for p in queries}


@pytest.mark.parametrize("repeat", [None, _hf_repeat_kv], ids=["rule", "hf_repeat_kv"])
def test_head_groups_draw_g_query_heads_per_kv_head(repeat):
    h_q, h_kvs = 8, (8, 2, 1)
    fig = plots.plot_head_groups(h_q=h_q, h_kvs=h_kvs, repeat=repeat)
    assert len(fig.axes) == len(h_kvs)
    for ax, h_kv in zip(fig.axes, h_kvs):
        g = h_q // h_kv
        owner, n_kv_patches, colours = _groups(ax)
        assert len(colours) == h_kv                                 # one colour per group
        assert n_kv_patches == 2 * h_kv                             # K^{(i)} and V^{(i)} for each i
        assert owner == [n // g for n in range(h_q)]                # consecutive query heads share a head
        assert len(ax.lines) == h_q                                 # one link per query head
        kx = sorted({line.get_xdata()[1] for line in ax.lines})
        ends = [kx.index(line.get_xdata()[1]) for line in sorted(ax.lines, key=lambda ln: ln.get_xdata()[0])]
        assert ends == [n // g for n in range(h_q)]
    titles = [ax.get_title() for ax in fig.axes]
    assert "MHA" in titles[0] and "GQA" in titles[1] and "MQA" in titles[2]


def test_head_groups_show_the_passed_repeat():
    tiled = lambda x, g: x.repeat(1, g, 1, 1)               # noqa: E731  wrong: n uses head n % h_kv
    fig = plots.plot_head_groups(h_q=8, h_kvs=(2,), repeat=tiled)
    owner, _, colours = _groups(fig.axes[0])
    assert len(colours) == 2 and owner == [n % 2 for n in range(8)]
    with pytest.raises(ValueError, match="expected h_q = 8"):
        plots.plot_head_groups(h_q=8, h_kvs=(2,), repeat=lambda x, g: x)
    with pytest.raises(ValueError, match="divisible"):
        plots.plot_head_groups(h_q=8, h_kvs=(3,))
