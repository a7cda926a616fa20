"""The shared internals of text-integrated-gradients, used by the commands at the top level.

The public API stays at the top (`integrated_gradients`, `gradients`, `dataset`, `model`, `tokenizer`);
the rest is here: how models are split at their embedding (embedding_split, model_io), how explanations
run (engine), the result type (attribution), the checkpoint format (checkpoint), every method by name
(methods) with the perturbation methods (perturbation, erasure, peers), rendering (render, plots), the
command lines' shared parts (cli, errors, files, validate), users' models (user_model), corpora
(corpus, summary) and training on several devices (distribute). The README's Layout table says which
file does what.
"""
