from ._loss import register_loss

register_loss("bce_with_logits", "BCEWithLogitsLoss", "mt_bce_with_logits", "float32",
              label_shape=lambda shape: shape, dims=lambda c, p: f"{c.size(p)}")
