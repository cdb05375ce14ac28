from ._softmax import register_softmax

register_softmax("LogSoftmax", "mt_log_softmax")
