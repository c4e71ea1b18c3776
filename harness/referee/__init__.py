"""A third backend in plain numpy, float64 always: the lab networks' forward and backward passes, their losses
and the four optimizers written out from the formulas, so that a disagreement between two frameworks can be
settled two against one and the parity claim does not rest on either framework's autodiff.

``model.py`` (layers, forward, backward), ``losses.py`` (each loss and its gradient), ``optim.py`` (SGD,
Adadelta, RMSprop, Adam as ``torch.optim`` defines them), ``train.py`` (the run loop and :func:`trace`),
``backend.py`` (this package seen through ``harness.backend.Backend``). Importing it registers nothing.
"""
