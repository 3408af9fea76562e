"""rnnl2: experiments on what L2 regularization does to recurrent networks."""

__version__ = "0.1.0"
