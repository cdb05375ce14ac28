from ._softmax import register_softmax

register_softmax("Softmax", "mt_softmax")
