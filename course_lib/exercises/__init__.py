"""Graded exercises, one module per assignment: each registers its exercises (reference + seeded cases)
with ``course_lib.grading``.

The forbidden shortcuts below are shared by the assignments whose exercises ask students to write the
operation themselves: Python-level names (caught when called, and by the grader's reading of the code)
and ``aten::`` prefixes (caught at PyTorch's dispatcher, whatever alias reached them).
"""
SDPA = ("torch.nn.functional.scaled_dot_product_attention", "torch._C._nn.scaled_dot_product_attention",
        "aten::_scaled_dot_product", "aten::scaled_dot_product")
FLEX = ("torch.nn.attention.flex_attention.flex_attention", "aten::_flex_attention")
MHA = ("torch.nn.MultiheadAttention", "torch.nn.functional.multi_head_attention_forward")
ATTENTION = SDPA + FLEX + MHA

CONV = ("torch.nn.functional.conv2d", "torch.conv2d", "torch.nn.Conv2d", "torch.nn.functional.conv_transpose2d",
        "aten::convolution", "aten::_convolution", "aten::conv2d", "aten::cudnn_convolution",
        "aten::mkldnn_convolution", "aten::_slow_conv2d", "aten::slow_conv")
POOL = ("torch.nn.functional.max_pool2d", "torch.max_pool2d", "torch.nn.MaxPool2d",
        "torch.nn.functional.avg_pool2d", "torch.nn.AvgPool2d", "torch.nn.functional.adaptive_max_pool2d",
        "aten::max_pool2d", "aten::avg_pool2d", "aten::adaptive_max_pool2d", "aten::adaptive_avg_pool2d")
