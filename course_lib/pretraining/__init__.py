"""Lecture 4, "Pre-training vs. fine-tuning": greedy layer-wise pre-training of a deep network
(autoencoder.py, layerwise.py: Ideas #1-#3 of the lecture, after Bengio et al., 2006) and generative
pre-training of a small Transformer language model, then fine-tuning (lm.py)."""
from .autoencoder import AutoencoderLayer, reconstruction_loss, train_autoencoder
from .layerwise import (RECIPES, DeepNet, RecipeConfig, RecipeResult, encode_stack, fine_tune, fix,
                        pretrain_layerwise, run_recipe, summarize, unfix)
from .lm import (LMConfig, SentenceClassifier, TransformerLM, Vocab, masked_lm_loss, pad_batch, pydoc_sentences,
                 sentence_log_likelihood, word_order_task)

__all__ = ["AutoencoderLayer", "reconstruction_loss", "train_autoencoder", "RECIPES", "DeepNet", "RecipeConfig",
           "RecipeResult", "encode_stack", "fine_tune", "fix", "pretrain_layerwise", "run_recipe", "summarize",
           "unfix", "LMConfig", "SentenceClassifier", "TransformerLM", "Vocab", "masked_lm_loss", "pad_batch",
           "sentence_log_likelihood", "pydoc_sentences", "word_order_task"]
