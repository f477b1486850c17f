"""tinyhil: take a Keras model to a microcontroller and prove, on the device,
that the quantized model still computes what the host computes."""

__version__ = "0.1.0"
