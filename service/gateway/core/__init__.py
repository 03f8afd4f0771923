"""The protocol-neutral core: validation, targets and routing, micro-batching, metrics and tensors."""
