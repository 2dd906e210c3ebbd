"""Networks: plain nn.Modules, tensors in and out."""
