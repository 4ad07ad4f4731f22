"""Convolutional neural networks, the CNN half of Lecture 4.

conv.py     2-D convolution (the lecture's sliding inner product) with channels, bias, stride and zero
            padding: forward and backward, as plain loops and vectorised (im2col); gradient checking
pool.py     max-pooling forward and backward (ties: first maximum in row-major order), downsampling by
            averaging as a convolution with uniform weights
kernels.py  the classic kernels: identity, box blur, Gaussian blur, sharpen, edge detectors, Sobel
plots.py    the figures of the convolution and cnn_layers notebooks
lenet.py    LeNet-5, the fully connected layer on 3-D input, softmax, SGD
architectures.py  layer lists of LeNet-5, AlexNet, VGG-19, ResNet-152: shapes and parameter counts
"""
from . import kernels
from .conv import (col2im, conv2d, conv2d_backward, conv2d_backward_loop, conv2d_image, conv2d_loop,
                   conv_output_size, im2col, numerical_gradient, pad2d, rel_error)
from .pool import (avg_pool2d_as_conv, max_pool2d, max_pool2d_backward, max_pool2d_backward_loop, max_pool2d_loop,
                   pool_output_size)
from . import architectures, lenet

__all__ = ["architectures", "kernels", "lenet",
           "col2im", "conv2d", "conv2d_backward", "conv2d_backward_loop", "conv2d_image", "conv2d_loop",
           "conv_output_size", "im2col", "numerical_gradient", "pad2d", "rel_error",
           "avg_pool2d_as_conv", "max_pool2d", "max_pool2d_backward", "max_pool2d_backward_loop", "max_pool2d_loop",
           "pool_output_size"]
