"""Reading and writing arcface_torch's ``.rec``/``.idx``/``property``/``.bin`` data without mxnet."""
